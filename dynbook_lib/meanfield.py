"""Mean-field two-layer networks as particle systems (Chizat & Bach 2018; Mei, Montanari & Nguyen 2018).

A two-layer network with ``m`` neurons ``w_i = (a_i, b_i)`` and output

    ``f(x) = m^(-beta) sum_i b_i sigma(a_i . x)``

is, for ``beta = 1``, the integral ``int phi(w, x) dmu(w)`` of the neuron ``phi(w, x) = b sigma(a . x)`` against the
empirical measure ``mu = (1/m) sum_i delta_{w_i}``: gradient descent on the neurons is a particle discretisation of
the Wasserstein gradient flow of the loss over measures. ``beta = 1/2`` is the usual (NTK / lazy) scaling.

Time scale. Gradient descent moves particle ``i`` by ``-s grad_{w_i} L`` with ``grad_{w_i} L = m^(-beta) g_i`` and
``g_i = E[r(x) grad_w phi(w_i, x)]`` (``r`` the residual). The outputs then move by
``-s m^(-2 beta) sum_i grad phi_i . g_i = -eta K r`` with the kernel ``K = (1/m) sum_i grad phi_i grad phi_i^T`` when
the per-particle step is ``s = eta m^(2 beta - 1)`` (:func:`particle_steps`): the function moves at the same speed in
every scaling, while each particle moves by ``eta m^(beta - 1) g_i``: ``O(1)`` in the mean-field scaling, ``O(m^-1/2)``
in the lazy one. Relative to the initial weights (norm ``~ sqrt(m)``) the displacement is ``O(m^(beta - 1))``.

Many networks of different widths are trained as one: :class:`ParticleNets` holds the particles of ``K`` networks
back to back (``sizes`` gives each one's width) and returns ``(K, n)`` outputs; the loss is the sum of the networks'
losses, so each network's gradient is its own. Independent replicates (other seeds: other teachers, inits and
samples) stack on a leading axis: ``a`` of shape ``(R, M, d)`` gives outputs ``(R, K, n)`` for inputs ``(R, n, d)``, and
a whole population experiment over ``R`` seeds is one batched run (:func:`population_sweep`).

For ReLU, ``phi`` is 2-homogeneous in ``w`` and gradient flow conserves ``b_i^2 - |a_i|^2`` for every neuron (a test
checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from dynbook_lib.core.progress import progress
from dynbook_lib.core.seeding import make_generator
from dynbook_lib.data.synthetic import TeacherStudent, unit_sphere
from dynbook_lib.lazy import GDRun, train_gd

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": torch.relu, "sigmoid": torch.sigmoid}
# sigma'(u) from u and sigma(u), for the closed-form gradient of ParticleNets.square_loss_grads
DERIVATIVES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda u, h: (u > 0).to(u.dtype),
    "sigmoid": lambda u, h: h * (1 - h),
}


def _check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


class ParticleNets(nn.Module):
    """``K`` two-layer networks ``f_k(x) = m_k^(-beta) sum_{i in k} b_i sigma(a_i . x)``, particles back to back.

    Args:
        a: input weights of all particles, shape ``(M, d)`` with ``M = sum(sizes)``, or ``(R, M, d)`` for ``R``
            independent replicates of the same widths (inputs ``(R, n, d)``, outputs ``(R, K, n)``).
        b: output weights, shape ``(M,)`` (or ``(R, M)``).
        sizes: width ``m_k`` of each network, in the order of the particles.
        beta: scaling exponent (``1`` mean field, ``1/2`` lazy / NTK).
        activation: ``"relu"`` or ``"sigmoid"``.

    Example:
        >>> a = torch.tensor([[1.0], [1.0], [2.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)
        >>> net = ParticleNets(a, b, sizes=(2, 1), beta=1.0)
        >>> net(torch.tensor([[1.0]], dtype=torch.float64)).tolist()  # (1 + 3) / 2 and 5 * 2 / 1
        [[2.0], [10.0]]
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, sizes: tuple[int, ...], beta: float,
                 activation: str = "relu") -> None:
        super().__init__()
        _check_activation(activation)
        if a.ndim not in (2, 3) or b.shape != a.shape[:-1] or sum(sizes) != a.shape[-2] or min(sizes) < 1:
            raise ValueError(f"need a ([R,] M, d), b ([R,] M) and positive sizes summing to M; got a "
                             f"{tuple(a.shape)}, b {tuple(b.shape)}, sizes {sizes}")
        self.a = nn.Parameter(a.clone())
        self.b = nn.Parameter(b.clone())
        self.sizes, self.beta, self.activation = tuple(sizes), float(beta), activation
        network = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        widths = torch.tensor(sizes, dtype=a.dtype)[network]
        pool = torch.zeros(len(network), len(sizes), dtype=a.dtype)
        pool[torch.arange(len(network)), network] = widths ** (-self.beta)
        self.register_buffer("network", network.to(a.device))
        self.register_buffer("pool", pool.to(a.device))  # (M, K): m_k^-beta on the particles of network k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = ACTIVATIONS[self.activation](x @ self.a.mT)  # ([R,] n, M)
        return ((hidden * self.b.unsqueeze(-2)) @ self.pool).mT  # ([R,] K, n)

    def square_loss_grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss ``L = sum_k (1/2n) sum_j (f_k(x_j) - y_j)^2`` (summed over networks, and replicates) and its
        gradients with respect to ``a`` and ``b``, in closed form (online SGD builds no autograd graph per step):

        ``dL/db_i = m_k^-beta (1/n) sum_j r_kj sigma(a_i . x_j)``,
        ``dL/da_i = m_k^-beta b_i (1/n) sum_j r_kj sigma'(a_i . x_j) x_j`` (``r`` the residual, ``k`` the network
        of particle ``i``). A test checks them against autograd.

        Args:
            x: inputs ``([R,] n, d)``.
            y: targets ``([R,] n)``, the same for every network.
        """
        with torch.no_grad():
            pre = x @ self.a.mT  # ([R,] n, M)
            hidden = ACTIVATIONS[self.activation](pre)
            residual = (hidden * self.b.unsqueeze(-2)) @ self.pool - y.unsqueeze(-1)  # ([R,] n, K)
            back = (residual / x.shape[-2]) @ self.pool.T  # ([R,] n, M): m_k^-beta r_k / n on each particle
            grad_b = (hidden * back).sum(-2)
            grad_a = (back * self.b.unsqueeze(-2) * DERIVATIVES[self.activation](pre, hidden)).mT @ x
            return 0.5 * residual.pow(2).mean(-2).sum(), grad_a, grad_b

    def particle_widths(self) -> torch.Tensor:
        """Width ``m_k`` of the network each particle belongs to, shape ``(M,)``."""
        return torch.tensor(self.sizes, dtype=self.a.dtype, device=self.a.device)[self.network]

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Per-particle ``values`` ``(M, ...)`` cut into one tensor per network."""
        return list(torch.split(values, list(self.sizes)))


def particle_steps(net: ParticleNets, eta: float) -> torch.Tensor:
    """Per-particle step ``eta m_k^(2 beta - 1)``, shape ``(M,)``: the same function-space speed for every width and
    scaling (``eta m`` on the mean-field time scale, ``eta`` in the lazy scaling)."""
    return eta * net.particle_widths() ** (2 * net.beta - 1)


def init_particles(sizes: tuple[int, ...], d: int, *, seed: int, beta: float, activation: str = "relu",
                   scale: float = 1.0, symmetric: bool = True, dtype: torch.dtype = torch.float64) -> ParticleNets:
    """Networks with ``a_i ~ scale N(0, I_d / d)`` and ``b_i ~ scale N(0, 1)``, each network drawing from its own
    generator, seeded by ``(seed, m_k)``, so a network's init depends on its seed and width only, not on the other
    networks of the batch.

    With ``symmetric=True`` neurons come in pairs ``(a, b)``, ``(a, -b)`` and every ``f_k(w0) = 0`` (widths must be
    even); a lazy network then starts from the zero function, as a mean-field one does in the limit.
    """
    if symmetric and any(m % 2 for m in sizes):
        raise ValueError(f"the symmetrised init needs even widths, got {sizes}")
    a_parts, b_parts = [], []
    for m in sizes:
        gen = make_generator(seed * 1_000_003 + m)
        half = m // 2 if symmetric else m
        a = torch.randn(half, d, generator=gen, dtype=dtype) * scale / d**0.5
        b = torch.randn(half, generator=gen, dtype=dtype) * scale
        if symmetric:
            a, b = torch.cat([a, a]), torch.cat([b, -b])
        a_parts.append(a)
        b_parts.append(b)
    return ParticleNets(torch.cat(a_parts), torch.cat(b_parts), sizes, beta, activation)


def relative_displacement(net: ParticleNets, a0: torch.Tensor, b0: torch.Tensor) -> torch.Tensor:
    """``||w - w0|| / ||w0||`` of each network (all its particles' ``a`` and ``b``), shape ``([R,] K)``."""
    moved = ((net.a.detach() - a0) ** 2).sum(-1) + (net.b.detach() - b0) ** 2  # ([R,] M)
    start = (a0**2).sum(-1) + b0**2
    member = (net.pool != 0).to(moved.dtype)  # (M, K): particle i belongs to network k
    return ((moved @ member) / (start @ member)).sqrt()


@dataclass
class OnlineRun:
    """Online SGD record: ``steps`` ``(T,)`` and the population loss of each network, ``loss`` of shape ``(T, K)``,
    or ``(T, R, K)`` for ``R`` replicates."""

    steps: torch.Tensor
    loss: torch.Tensor


def train_online(net: ParticleNets, teacher: Callable[[torch.Tensor], torch.Tensor], x_test: torch.Tensor,
                 *, eta: float, steps: int, batch_size: int, seed: int | Sequence[int], record_every: int = 100,
                 desc: str | None = None) -> OnlineRun:
    """SGD on fresh Gaussian inputs ``N(0, I_d)`` at every step (the population loss, no training set), half square
    loss to ``teacher(x)``, per-particle steps :func:`particle_steps`; records the population loss estimated on
    ``x_test`` (half mean square error, per network).

    With ``R`` replicates (``net.a`` of shape ``(R, M, d)``, ``teacher`` and ``x_test`` batched the same way),
    ``seed`` is a sequence of ``R`` seeds, one input stream each: replicate ``r`` sees the inputs it would see trained
    alone with ``seed[r]``, and the loss (the sum over replicates and networks) gives each its own gradient.
    """
    batched = net.a.ndim == 3
    seeds = list(seed) if batched else [seed]  # type: ignore[list-item]
    if batched and len(seeds) != net.a.shape[0]:
        raise ValueError(f"{net.a.shape[0]} replicates need as many seeds, got {len(seeds)}")
    gens = [make_generator(int(s)) for s in seeds]
    d = net.a.shape[-1]
    steps_per_particle = particle_steps(net, eta)
    y_test = teacher(x_test).unsqueeze(-2)  # ([R,] 1, n): broadcast over the networks
    record_steps, losses = [], []
    for step in progress(range(steps + 1), desc=desc, leave=False):
        if step % record_every == 0 or step == steps:
            with torch.no_grad():
                losses.append(0.5 * ((net(x_test) - y_test) ** 2).mean(-1))
            record_steps.append(step)
        if step == steps:
            break
        x = torch.stack([torch.randn(batch_size, d, generator=g, dtype=net.a.dtype) for g in gens])
        x = (x if batched else x[0]).to(net.a.device)
        _, grad_a, grad_b = net.square_loss_grads(x, teacher(x))
        with torch.no_grad():
            net.a -= steps_per_particle[:, None] * grad_a
            net.b -= steps_per_particle * grad_b
    return OnlineRun(torch.tensor(record_steps), torch.stack(losses))


@dataclass
class WidthSweep:
    """Full-batch GD of networks of several widths in one scaling: ``widths``, ``beta``, the recorded run (losses of
    shape ``(T, K)``), each network's final relative displacement ``(K,)`` and the trained ``net``."""

    widths: tuple[int, ...]
    beta: float
    run: GDRun
    displacement: torch.Tensor
    net: ParticleNets


def width_sweep(task: TeacherStudent, widths: tuple[int, ...], beta: float, *, eta: float, steps: int, seed: int,
                activation: str = "relu", scale: float = 1.0, record_every: int = 100,
                desc: str | None = None) -> WidthSweep:
    """Train one network per width (symmetrised init, so every ``f(w0) = 0``) by full-batch GD on the half square loss
    with the per-particle steps of :func:`particle_steps`, all widths at once."""
    x = task.X
    net = init_particles(widths, x.shape[1], seed=seed, beta=beta, activation=activation, scale=scale,
                         dtype=x.dtype).to(x.device)
    a0, b0 = net.a.detach().clone(), net.b.detach().clone()
    run = train_gd(net, x, task.y, particle_steps(net, eta), steps, x_test=task.X_test, y_test=task.y_test,
                   record_every=record_every, desc=desc)
    return WidthSweep(tuple(widths), beta, run, relative_displacement(net, a0, b0), net)


def init_output_rms(widths: tuple[int, ...], d: int, beta: float, x: torch.Tensor, *, seed: int,
                    draws: int = 20) -> torch.Tensor:
    """Root mean square of ``f(w0)(x)`` over ``x`` and ``draws`` ordinary (not symmetrised) inits, one value per
    width: ``O(m^(1/2 - beta))`` by the central limit theorem."""
    total = torch.zeros(len(widths), dtype=x.dtype, device=x.device)
    for k in range(draws):
        net = init_particles(widths, d, seed=seed + k, beta=beta, symmetric=False, dtype=x.dtype).to(x.device)
        with torch.no_grad():
            total += net(x).pow(2).mean(1)
    return (total / draws).sqrt()


@dataclass
class PlantedTeacher:
    """``f*(x) = sum_j s_j sigma(theta_j . x)`` with unit directions ``theta`` ``([R,] m0, d)`` and signs
    ``s = +-1`` ``([R,] m0)``; inputs ``([R,] n, d)``, outputs ``([R,] n)``."""

    theta: torch.Tensor
    signs: torch.Tensor
    activation: str = "relu"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        hidden = ACTIVATIONS[self.activation](x @ self.theta.to(x.device).mT)  # ([R,] n, m0)
        return (hidden * self.signs.to(x.device).unsqueeze(-2)).sum(-1)


def planted_teacher(d: int, m0: int, *, seed: int, activation: str = "relu",
                    dtype: torch.dtype = torch.float64) -> PlantedTeacher:
    """A teacher of ``m0`` neurons: directions uniform on the unit sphere, signs ``+-1`` with probability 1/2.

    Example:
        >>> teacher = planted_teacher(3, 2, seed=0)
        >>> tuple(teacher(torch.zeros(5, 3, dtype=torch.float64)).shape)
        (5,)
    """
    _check_activation(activation)
    gen = make_generator(seed)
    theta = unit_sphere(m0, d, gen, dtype)
    signs = torch.randint(0, 2, (m0,), generator=gen, dtype=dtype) * 2 - 1
    return PlantedTeacher(theta, signs, activation)


def population_sweep(widths: tuple[int, ...], d: int, m0: int, *, activation: str, seeds: Sequence[int], eta: float,
                     steps: int, batch_size: int, scale: float, n_test: int, record_every: int = 100,
                     dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> OnlineRun:
    """Mean-field networks of several widths trained by online SGD on a planted teacher of ``m0`` neurons of the same
    activation, for each seed ``s`` of ``seeds`` (teacher seed ``s + 1``, test inputs ``s + 2``, init ``s``, SGD inputs
    ``s + 3``), all replicates in one batched run. The loss, of shape ``(T, R, K)``, is normalised per replicate by
    that of the zero function, ``E[f*^2] / 2`` (so 1 at the symmetrised init)."""
    teachers = [planted_teacher(d, m0, seed=s + 1, activation=activation, dtype=dtype) for s in seeds]
    teacher = PlantedTeacher(torch.stack([t.theta for t in teachers]), torch.stack([t.signs for t in teachers]),
                             activation)
    x_test = torch.stack([torch.randn(n_test, d, generator=make_generator(s + 2), dtype=dtype) for s in seeds])
    nets = [init_particles(widths, d, seed=s, beta=1.0, activation=activation, scale=scale, dtype=dtype)
            for s in seeds]
    net = ParticleNets(torch.stack([n.a.detach() for n in nets]), torch.stack([n.b.detach() for n in nets]), widths,
                       1.0, activation).to(device)
    x_test = x_test.to(device)
    run = train_online(net, teacher, x_test, eta=eta, steps=steps, batch_size=batch_size, seed=[s + 3 for s in seeds],
                       record_every=record_every, desc=f"{activation}, {len(seeds)} seeds")
    zero_loss = 0.5 * teacher(x_test).pow(2).mean(-1)  # (R,)
    return OnlineRun(run.steps, (run.loss / zero_loss[:, None]).cpu())


@dataclass
class Convergence:
    """Which runs of a population sweep reached the global minimum: final normalised losses ``final`` ``(R, K)``,
    ``tol``, the fraction of seeds above ``tol`` at each width ``failing`` ``(K,)``, ``m_star`` (the smallest width
    from which the claim is made) and ``worst`` (the largest final loss over every seed and every width ``>= m_star``).
    """

    widths: tuple[int, ...]
    final: torch.Tensor
    tol: float
    failing: torch.Tensor
    m_star: int
    worst: float


def convergence(final: torch.Tensor, widths: tuple[int, ...], *, tol: float, m_star: int) -> Convergence:
    """Summarise the final losses ``(R, K)`` of ``R`` seeds at ``widths``: per-width failure fraction (loss above
    ``tol``) and the worst loss over the widths ``>= m_star``.

    Example:
        >>> final = torch.tensor([[0.1, 1e-6], [1e-9, 2e-6]], dtype=torch.float64)  # 2 seeds, widths 4 and 8
        >>> c = convergence(final, (4, 8), tol=1e-4, m_star=8)
        >>> c.failing.tolist(), c.worst
        ([0.5, 0.0], 2e-06)
    """
    if final.ndim != 2 or final.shape[1] != len(widths) or m_star > max(widths):
        raise ValueError(f"need final (R, K) with K = {len(widths)} widths and m_star <= {max(widths)}; got "
                         f"{tuple(final.shape)}, m_star {m_star}")
    above = torch.tensor(widths) >= m_star
    return Convergence(tuple(widths), final, tol, (final > tol).to(final.dtype).mean(0), m_star,
                       float(final[:, above].max()))


@dataclass(frozen=True)
class MeanFieldConfig:
    """Sizes of the chapter (``MEANFIELD_FAST`` / ``MEANFIELD_FULL``).

    Width sweep (teacher-student regression, full-batch GD, ReLU): ``d``, ``n``, ``n_test``, teacher width ``m0``,
    ``widths``, step ``eta`` (per particle ``eta m^(2 beta - 1)``), ``steps``, init ``scale``, ``sweep_seeds``.
    Population (online SGD, mean field): ``pop_d``, ``pop_m0``, ``pop_widths``, ``pop_seeds`` (replicates, trained
    as one batch), steps ``pop_eta`` (ReLU) and ``pop_eta_sigmoid``, ``pop_steps``, ``pop_batch``, ``pop_scale``,
    ``pop_n_test``; a run has converged when its normalised loss is at most ``pop_tol``, and global convergence is
    claimed for every seed from the width ``pop_spare_relu * pop_m0`` (ReLU) and ``pop_spare_sigmoid * pop_m0``
    (sigmoid) up. Two-dimensional flow: ``flow_n``, ``flow_m``, ``flow_eta``, ``flow_steps``, ``flow_scale``.
    """

    d: int
    n: int
    n_test: int
    m0: int
    widths: tuple[int, ...]
    eta: float
    steps: int
    sweep_seeds: int
    pop_d: int
    pop_m0: int
    pop_widths: tuple[int, ...]
    pop_seeds: int
    pop_eta: float
    pop_steps: int
    pop_batch: int
    scale: float = 1.0
    pop_scale: float = 1.0
    pop_n_test: int = 4000
    pop_eta_sigmoid: float = 2.0
    pop_tol: float = 1e-4
    pop_spare_relu: int = 4
    pop_spare_sigmoid: int = 8
    flow_n: int = 200
    flow_m: int = 64
    flow_eta: float = 0.5
    flow_steps: int = 3000
    flow_scale: float = 0.1
    dtype: torch.dtype = torch.float64


MEANFIELD_FAST = MeanFieldConfig(
    d=20, n=300, n_test=1000, m0=3, widths=tuple(2**k for k in range(1, 10)), eta=0.5, steps=1000, sweep_seeds=3,
    pop_d=10, pop_m0=4, pop_widths=tuple(4 * 2**k for k in range(6)), pop_seeds=8, pop_eta=0.5, pop_steps=3000,
    pop_batch=50, dtype=torch.float32,
)
MEANFIELD_FULL = MeanFieldConfig(
    d=100, n=1000, n_test=5000, m0=3, widths=tuple(2**k for k in range(1, 10)), eta=0.5, steps=25_000, sweep_seeds=5,
    pop_d=10, pop_m0=4, pop_widths=tuple(4 * 2**k for k in range(9)), pop_seeds=10, pop_eta=0.5, pop_steps=60_000,
    pop_batch=200, pop_n_test=20_000, flow_steps=10_000,
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
MEANFIELD_SMOKE = replace(MEANFIELD_FULL, n=100, n_test=200, steps=20, sweep_seeds=2, pop_seeds=2, pop_steps=20,
                          pop_n_test=400, flow_steps=20)
