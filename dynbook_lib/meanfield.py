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
losses, so each network's gradient is its own.

For ReLU, ``phi`` is 2-homogeneous in ``w`` and gradient flow conserves ``b_i^2 - |a_i|^2`` for every neuron (a test
checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from dynbook_lib.core.progress import progress
from dynbook_lib.core.seeding import make_generator
from dynbook_lib.data.synthetic import TeacherStudent, unit_sphere
from dynbook_lib.lazy import GDRun, train_gd

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": torch.relu, "sigmoid": torch.sigmoid}


def _check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


class ParticleNets(nn.Module):
    """``K`` two-layer networks ``f_k(x) = m_k^(-beta) sum_{i in k} b_i sigma(a_i . x)``, particles back to back.

    Args:
        a: input weights of all particles, shape ``(M, d)`` with ``M = sum(sizes)``.
        b: output weights, shape ``(M,)``.
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
        if a.ndim != 2 or b.shape != a.shape[:1] or sum(sizes) != len(a) or min(sizes) < 1:
            raise ValueError(f"need a (M, d), b (M,) and positive sizes summing to M; got a {tuple(a.shape)}, "
                             f"b {tuple(b.shape)}, sizes {sizes}")
        self.a = nn.Parameter(a.clone())
        self.b = nn.Parameter(b.clone())
        self.sizes, self.beta, self.activation = tuple(sizes), float(beta), activation
        network = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        widths = torch.tensor(sizes, dtype=a.dtype)[network]
        pool = torch.zeros(len(a), len(sizes), dtype=a.dtype)
        pool[torch.arange(len(a)), network] = widths ** (-self.beta)
        self.register_buffer("network", network.to(a.device))
        self.register_buffer("pool", pool.to(a.device))  # (M, K): m_k^-beta on the particles of network k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = ACTIVATIONS[self.activation](x @ self.a.T)  # (n, M)
        return ((hidden * self.b) @ self.pool).T  # (K, n)

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
    """``||w - w0|| / ||w0||`` of each network (all its particles' ``a`` and ``b``), shape ``(K,)``."""
    moved = ((net.a.detach() - a0) ** 2).sum(1) + (net.b.detach() - b0) ** 2
    start = (a0**2).sum(1) + b0**2
    per_net = torch.zeros(len(net.sizes), 2, dtype=moved.dtype, device=moved.device)
    per_net.index_add_(0, net.network, torch.stack([moved, start], 1))
    return (per_net[:, 0] / per_net[:, 1]).sqrt()


@dataclass
class OnlineRun:
    """Online SGD record: ``steps`` and the population loss of each network, ``loss`` of shape ``(T, K)``."""

    steps: torch.Tensor
    loss: torch.Tensor


def train_online(net: ParticleNets, teacher: Callable[[torch.Tensor], torch.Tensor], x_test: torch.Tensor,
                 *, eta: float, steps: int, batch_size: int, seed: int, record_every: int = 100,
                 desc: str | None = None) -> OnlineRun:
    """SGD on fresh Gaussian inputs ``N(0, I_d)`` at every step (the population loss, no training set), half square
    loss to ``teacher(x)``, per-particle steps :func:`particle_steps`; records the population loss estimated on
    ``x_test`` (half mean square error, per network)."""
    gen = make_generator(seed)
    steps_per_particle = particle_steps(net, eta)
    params = [net.a, net.b]
    y_test = teacher(x_test)
    record_steps, losses = [], []
    for step in progress(range(steps + 1), desc=desc, leave=False):
        if step % record_every == 0 or step == steps:
            with torch.no_grad():
                losses.append(0.5 * ((net(x_test) - y_test) ** 2).mean(1))
            record_steps.append(step)
        if step == steps:
            break
        x = torch.randn(batch_size, net.a.shape[1], generator=gen, dtype=net.a.dtype).to(net.a.device)
        loss = 0.5 * ((net(x) - teacher(x)) ** 2).mean(1).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            net.a -= steps_per_particle[:, None] * grads[0]
            net.b -= steps_per_particle * grads[1]
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


def planted_teacher(d: int, m0: int, *, seed: int, activation: str = "relu",
                    dtype: torch.dtype = torch.float64) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f*(x) = sum_j s_j sigma(theta_j . x)`` with ``m0`` unit directions ``theta_j`` and signs ``s_j = +-1``.

    Example:
        >>> teacher = planted_teacher(3, 2, seed=0)
        >>> tuple(teacher(torch.zeros(5, 3, dtype=torch.float64)).shape)
        (5,)
    """
    _check_activation(activation)
    gen = make_generator(seed)
    theta = unit_sphere(m0, d, gen, dtype)
    signs = torch.randint(0, 2, (m0,), generator=gen, dtype=dtype) * 2 - 1
    sigma = ACTIVATIONS[activation]

    def teacher(x: torch.Tensor) -> torch.Tensor:
        return sigma(x @ theta.to(x.device).T) @ signs.to(x.device)

    return teacher


def population_sweep(widths: tuple[int, ...], d: int, m0: int, *, activation: str, seed: int, eta: float, steps: int,
                     batch_size: int, scale: float, n_test: int, record_every: int = 100,
                     dtype: torch.dtype = torch.float64) -> OnlineRun:
    """Mean-field networks of several widths trained by online SGD on a planted teacher of ``m0`` neurons of the same
    activation; the loss is normalised by that of the zero function, ``E[f*^2] / 2`` (so 1 at a zero init)."""
    teacher = planted_teacher(d, m0, seed=seed + 1, activation=activation, dtype=dtype)
    x_test = torch.randn(n_test, d, generator=make_generator(seed + 2), dtype=dtype)
    net = init_particles(widths, d, seed=seed, beta=1.0, activation=activation, scale=scale, dtype=dtype)
    run = train_online(net, teacher, x_test, eta=eta, steps=steps, batch_size=batch_size, seed=seed + 3,
                       record_every=record_every, desc=f"{activation}, seed {seed}")
    return OnlineRun(run.steps, run.loss / (0.5 * teacher(x_test).pow(2).mean()))


@dataclass(frozen=True)
class MeanFieldConfig:
    """Sizes of the chapter (``MEANFIELD_FAST`` / ``MEANFIELD_FULL``).

    Width sweep (teacher-student regression, full-batch GD, ReLU): ``d``, ``n``, ``n_test``, teacher width ``m0``,
    ``widths``, step ``eta`` (per particle ``eta m^(2 beta - 1)``), ``steps``, init ``scale``, ``sweep_seeds``.
    Population (online SGD, mean field): ``pop_d``, ``pop_m0``, ``pop_widths``, ``pop_seeds``, ``pop_eta``,
    ``pop_steps``, ``pop_batch``, ``pop_scale``, ``pop_n_test``. Two-dimensional flow: ``flow_n``, ``flow_m``,
    ``flow_eta``, ``flow_steps``, ``flow_scale``.
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
    flow_n: int = 200
    flow_m: int = 64
    flow_eta: float = 0.5
    flow_steps: int = 3000
    flow_scale: float = 0.1
    dtype: torch.dtype = torch.float64


MEANFIELD_FAST = MeanFieldConfig(
    d=20, n=300, n_test=1000, m0=3, widths=tuple(2**k for k in range(1, 10)), eta=0.5, steps=1000, sweep_seeds=3,
    pop_d=10, pop_m0=4, pop_widths=tuple(4 * 2**k for k in range(7)), pop_seeds=3, pop_eta=0.1, pop_steps=3000,
    pop_batch=100, dtype=torch.float32,
)
MEANFIELD_FULL = MeanFieldConfig(
    d=100, n=1000, n_test=5000, m0=3, widths=tuple(2**k for k in range(1, 10)), eta=0.5, steps=25_000, sweep_seeds=5,
    pop_d=10, pop_m0=4, pop_widths=tuple(4 * 2**k for k in range(9)), pop_seeds=10, pop_eta=0.1, pop_steps=30_000,
    pop_batch=200, pop_n_test=20_000, flow_steps=10_000,
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
MEANFIELD_SMOKE = replace(MEANFIELD_FULL, n=100, n_test=200, steps=20, sweep_seeds=2, pop_seeds=2, pop_steps=20,
                          pop_n_test=400, flow_steps=20)
