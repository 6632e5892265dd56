"""Lazy training (Chizat, Oyallon & Bach 2019): two-layer ReLU students, init scale, and the rescaled model.

Conventions, as in the paper's shallow experiments:

* student ``f(x) = (1/m) sum_i b_i relu(a_i . x)`` (:class:`TwoLayerReLU`, batched over ``B`` independent networks);
* symmetrised init (:func:`two_layer_init`): neurons come in pairs with the same ``a_i`` and opposite ``b_i``, so
  ``f(w0) = 0``; ``a_i ~ tau N(0, I_d)``, ``|b_i| ~ tau |N(0, 1)|``: both layers scaled by ``tau``. The model is
  2-homogeneous, ``f(tau w) = tau^2 f(w)``, so scaling the init by ``tau`` is lazy training with ``alpha = tau^2``;
* loss ``L = (1/2n) sum_i (f(x_i) - y_i)^2``; gradient descent ``w <- w - eta m grad L`` (the factor ``m`` is the
  mean-field time scale of the paper's code) with ``eta = min(10, 0.1 / tau^2)``;
* the rescaled model ``F_alpha(w) = alpha (f(w) - f(w0))`` trained with step ``eta / alpha^2`` stays within
  ``O(1/alpha)`` of its linearisation (:class:`dynbook_lib.linearize.LinearizedModel`), Theorem 2.3 of the paper.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from dynbook_lib.core.progress import progress
from dynbook_lib.core.seeding import make_generator
from dynbook_lib.data.synthetic import TeacherStudent
from dynbook_lib.kernels import kernel_gd_predict
from dynbook_lib.linearize import LinearizedModel
from dynbook_lib.models import mlp
from dynbook_lib.ntk import empirical_ntk


class TwoLayerReLU(nn.Module):
    """``B`` independent students ``f_b(x) = (1/m) sum_i b_i relu(a_i . x)``; outputs of shape ``(B, n)``.

    Args:
        a: input weights, shape ``(B, m, d)``.
        b: output weights, shape ``(B, m)``.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        if a.ndim != 3 or b.shape != a.shape[:2]:
            raise ValueError(f"need a of shape (B, m, d) and b of shape (B, m); got {tuple(a.shape)}, {tuple(b.shape)}")
        self.a = nn.Parameter(a.clone())
        self.b = nn.Parameter(b.clone())

    @property
    def width(self) -> int:
        return self.a.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(x @ self.a.transpose(1, 2))  # (B, n, m)
        return (hidden @ self.b.unsqueeze(-1)).squeeze(-1) / self.width

    def single(self, index: int = 0) -> nn.Sequential:
        """Network ``index`` as ``Linear(d, m) - ReLU - Linear(m, 1) - times 1/m`` with ``(n, 1)`` outputs and the same
        parameters ``(a, b)`` (so the same tangent kernel), for the NTK tools of :mod:`dynbook_lib.ntk`."""
        d, m = self.a.shape[2], self.width
        net = nn.Sequential(nn.Linear(d, m, bias=False), nn.ReLU(), nn.Linear(m, 1, bias=False), _Scale(1.0 / m))
        net = net.to(self.a)
        with torch.no_grad():
            net[0].weight.copy_(self.a[index])
            net[2].weight.copy_(self.b[index].unsqueeze(0))
        return net


class _Scale(nn.Module):
    """Multiplication by a fixed constant (no parameter)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def two_layer_init(m: int, d: int, taus: torch.Tensor, *, seed: int, symmetric: bool = True) -> TwoLayerReLU:
    """Students with Gaussian weights scaled by ``tau``, one per scale (the same base draw for every ``tau``).

    ``a_i ~ tau N(0, I_d)``, ``b_i ~ tau N(0, 1)``. With ``symmetric=True`` (the paper's init) the neurons come in
    pairs ``(a_i, |b_i|)``, ``(a_i, -|b_i|)``, so ``f(w0) = 0``. Caution: the pairing also cancels the second-order
    term of the Taylor expansion along gradient descent (the two neurons of a pair move their ``a`` in opposite
    directions and their ``b`` in the same one), so the linearisation error of a symmetrised net is ``O(1/alpha^2)``,
    not ``O(1/alpha)``; the chapter's linearisation experiment therefore uses an ordinary initialisation
    (:func:`shallow_net`) and subtracts ``f(w0)`` instead.

    Args:
        m: width (even when ``symmetric``).
        d: input dimension.
        taus: init scales, shape ``(B,)``; dtype and device of the weights.
        seed: seed of the base draw.
        symmetric: pair the neurons.

    Example:
        >>> net = two_layer_init(4, 3, torch.tensor([1.0, 2.0], dtype=torch.float64), seed=0)
        >>> float(net(torch.randn(5, 3, dtype=torch.float64)).detach().abs().max()) < 1e-15  # f(w0) = 0
        True
    """
    if m <= 0 or (symmetric and m % 2):
        raise ValueError(f"the width must be positive (and even for the symmetrised init), got m={m}")
    gen = make_generator(seed)
    if symmetric:
        half = m // 2
        a_half = torch.randn(half, d, generator=gen, dtype=taus.dtype)
        b_half = torch.randn(half, generator=gen, dtype=taus.dtype).abs()
        a, b = torch.cat([a_half, a_half]), torch.cat([b_half, -b_half])
    else:
        a = torch.randn(m, d, generator=gen, dtype=taus.dtype)
        b = torch.randn(m, generator=gen, dtype=taus.dtype)
    a, b = a.to(taus.device), b.to(taus.device)
    return TwoLayerReLU(taus[:, None, None] * a, taus[:, None] * b)


def paper_step(taus: torch.Tensor, max_step: float = 10.0, scale: float = 0.1) -> torch.Tensor:
    """The paper's step ``min(10, 0.1 / tau^2)``: stable for the ``tau^2``-growing tangent kernel."""
    return torch.clamp(scale / taus**2, max=max_step)


class Rescaled(nn.Module):
    """``alpha (g(w)(x) - g(w0)(x))``, the rescaled model of lazy training.

    ``alpha`` is a number, or a tensor ``(B,)`` for a batched model ``g`` with outputs ``(B, ...)`` (one scale per
    network). ``g(w0)`` is a frozen copy taken at construction. With ``subtract_initial=False`` it is ``alpha g(w)(x)``
    (for a model that is already zero at ``w0``, such as a centred :class:`~dynbook_lib.linearize.LinearizedModel`).
    """

    def __init__(self, model: nn.Module, alpha: torch.Tensor | float, *, subtract_initial: bool = True) -> None:
        super().__init__()
        self.model = model
        if isinstance(alpha, torch.Tensor):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha
        self.initial = None
        if subtract_initial:
            self.initial = copy.deepcopy(model).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.initial is not None:
            out = out - self.initial(x)
        alpha = self.alpha
        if isinstance(alpha, torch.Tensor) and alpha.ndim == 1:
            alpha = alpha.reshape(-1, *[1] * (out.ndim - 1))
        return alpha * out


def half_mse(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(1/2n) sum_i (f(x_i) - y_i)^2`` for each of the ``B`` rows of ``outputs`` ``(B, n)``."""
    return 0.5 * ((outputs - y) ** 2).mean(-1)


@dataclass
class GDRun:
    """Recorded gradient descent. ``times`` are step counts; losses have shape ``(T, B)``; ``path`` maps a parameter
    name to its values ``(T, *shape)`` when requested; ``test_outputs`` are the predictions ``(B, n_test)`` on the
    held-out set after the last step (when one was given)."""

    times: torch.Tensor
    train_loss: torch.Tensor
    test_loss: torch.Tensor | None
    outputs: torch.Tensor | None
    path: dict[str, torch.Tensor]
    test_outputs: torch.Tensor | None = None


def train_gd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: torch.Tensor,
    steps: int,
    *,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    record_every: int = 1,
    keep_outputs: bool = False,
    keep_path: bool = False,
    compensated: bool = False,
    desc: str | None = None,
) -> GDRun:
    """Full-batch gradient descent on ``sum_B (1/2n) ||model(x)_B - y||^2``, one step size per batch element.

    Args:
        model: maps ``(n, d)`` to ``(B, n)``; every parameter's first dimension is ``B``.
        x, y: training inputs ``(n, d)`` and targets ``(n,)``.
        lr: step of each batch element, shape ``(B,)`` (include any time-scale factor such as ``m``).
        steps: number of steps.
        x_test, y_test: optional held-out set, evaluated at each record.
        record_every: record losses (and outputs, path) every this many steps, and after the last.
        keep_outputs: record the training outputs ``(T, B, n)``.
        keep_path: record every parameter ``(T, B, ...)``.
        compensated: add each step to the weights with Kahan's compensated summation. In float32 a step smaller than
            the weights' last digit is rounded away, and a lazy network (large ``tau``, relative steps of 1e-6) then
            drifts from gradient descent; with the compensation the weights are the float32 rounding of the exact
            sum of the steps (the forward pass still rounds to float32, an error that does not accumulate).
        desc: progress-bar label (quiet in headless runs).
    """
    if steps < 0 or record_every < 1:
        raise ValueError(f"need steps >= 0 and record_every >= 1, got steps={steps}, record_every={record_every}")
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    times, train, test, outs, path = [], [], [], [], {n: [] for n in names}
    test_outputs = None
    carry = [torch.zeros_like(p) for p in params] if compensated else None

    def record(step: int, out: torch.Tensor) -> None:
        nonlocal test_outputs
        times.append(step)
        train.append(half_mse(out, y).detach())
        if keep_outputs:
            outs.append(out.detach().clone())
        if keep_path:
            for n, p in zip(names, params):
                path[n].append(p.detach().clone())
        if x_test is not None:
            with torch.no_grad():
                test_outputs = model(x_test)
                test.append(half_mse(test_outputs, y_test))

    for step in progress(range(steps + 1), desc=desc, leave=False):
        out = model(x)
        if step % record_every == 0 or step == steps:
            record(step, out)
        if step == steps:
            break
        grads = torch.autograd.grad(half_mse(out, y).sum(), params)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                delta = -lr.reshape(-1, *([1] * (p.ndim - 1))) * g
                if carry is None:
                    p += delta
                else:  # Kahan: carry holds what the last addition lost
                    delta -= carry[i]
                    new = p + delta
                    carry[i] = (new - p) - delta
                    p.copy_(new)
    return GDRun(
        torch.tensor(times),
        torch.stack(train),
        torch.stack(test) if test else None,
        torch.stack(outs) if keep_outputs else None,
        {n: torch.stack(v) for n, v in path.items()} if keep_path else {},
        test_outputs,
    )


def loglog_slope(x: torch.Tensor | list[float], y: torch.Tensor | list[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``.

    Example:
        >>> round(loglog_slope([1.0, 2.0, 4.0], [3.0, 1.5, 0.75]), 12)
        -1.0
    """
    lx = torch.log(torch.as_tensor(x, dtype=torch.float64))
    ly = torch.log(torch.as_tensor(y, dtype=torch.float64))
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


@dataclass(frozen=True)
class LazyTrainingConfig:
    """Sizes of the chapter (``LAZY_FAST`` / ``LAZY_FULL``).

    Teacher-student (paper, Sec. 5): ``d``, ``n_train``, ``n_test``, teacher width ``m0``, student width ``m``,
    ``log10_taus``, ``trials``, ``steps``; the same sweep at the under-parameterised width ``m_under`` (``m_under (d +
    1) < n_train``; 0 skips it). Linearisation: a width-``lin_width`` student on ``lin_n`` points in
    dimension ``lin_d``, rescaled by each of ``alphas``, ``lin_steps`` steps of ``1 / lambda_max``, slopes fitted over
    ``alpha >= lin_fit_min_alpha`` (the asymptotic range). Neurons in 2-D:
    ``n_2d`` points, width ``m_2d``, scales ``taus_2d``, ``steps_2d`` steps of ``min(max_step_2d, 0.1 / tau^2)`` (the
    paper's cap of 10 diverges at small ``tau`` in 2-D, where the trained weights are larger than the init). Full profile only: a VGG-11 on CIFAR-10
    at ``cnn_alphas`` for ``cnn_epochs`` epochs (none in the fast profile). ``dtype`` is that of the teacher-student
    sweep (float32 in the fast profile for speed, with compensated updates, see :func:`teacher_student_sweep`; its
    tangent-kernel limit is computed in float64; the linearisation and 2-D experiments always run in float64).
    """

    d: int
    n_train: int
    n_test: int
    m0: int
    m: int
    log10_taus: tuple[float, ...]
    trials: int
    steps: int
    lin_d: int
    lin_n: int
    lin_width: int
    alphas: tuple[float, ...]
    lin_steps: int
    lin_fit_min_alpha: float
    n_2d: int
    m_2d: int
    taus_2d: tuple[float, ...]
    steps_2d: int
    max_step_2d: float
    m_under: int = 0
    cnn_alphas: tuple[float, ...] = ()
    cnn_epochs: int = 0
    dtype: torch.dtype = torch.float64

    def taus(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.tensor([10.0**e for e in self.log10_taus], dtype=self.dtype, device=device)


LAZY_FAST = LazyTrainingConfig(
    d=100, n_train=1000, n_test=1000, m0=3, m=50, log10_taus=(-1.0, -0.5, 0.0, 0.5, 1.0), trials=3,
    steps=3000, lin_d=10, lin_n=200, lin_width=200, alphas=tuple(2.0**k for k in range(9)), lin_steps=400,
    lin_fit_min_alpha=4.0,
    n_2d=15, m_2d=16, taus_2d=(0.1, 2.0), steps_2d=4000, max_step_2d=1.0, m_under=6, dtype=torch.float32,
)
LAZY_FULL = LazyTrainingConfig(
    d=100, n_train=1000, n_test=1000, m0=3, m=50, log10_taus=tuple(round(-2.2 + 0.1 * i, 1) for i in range(33)),
    trials=10, steps=10_000, lin_d=10, lin_n=200, lin_width=200, alphas=tuple(2.0**k for k in range(13)),
    lin_steps=2000, lin_fit_min_alpha=4.0, n_2d=15, m_2d=16, taus_2d=(0.1, 2.0), steps_2d=20_000, max_step_2d=1.0,
    m_under=6, cnn_alphas=(1.0, 1e2, 1e5), cnn_epochs=15,
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
LAZY_SMOKE = replace(LAZY_FULL, n_train=64, n_test=64, trials=1, steps=20, lin_n=40, lin_steps=20, steps_2d=500,
                     cnn_epochs=1)


def teacher_student_sweep(task: TeacherStudent, taus: torch.Tensor, m: int, steps: int, *, seed: int,
                          record_every: int = 100, desc: str | None = None) -> GDRun:
    """Train one symmetrised student per ``tau`` (one batch) on a teacher-student task with the paper's steps.

    The steps are added with compensated summation (``train_gd(compensated=True)``): at ``tau = 10`` late steps
    change the weights by about 1e-6 of their size, near float32's resolution, and plain float32 updates drift from
    gradient descent (measured at seed 0, ``tau = 10``: relative distance of the test predictions to the
    tangent-kernel predictor 0.0065 with plain updates, 0.0048 compensated)."""
    model = two_layer_init(m, task.X.shape[1], taus, seed=seed)
    return train_gd(model, task.X, task.y, m * paper_step(taus), steps, x_test=task.X_test, y_test=task.y_test,
                    record_every=record_every, compensated=True, desc=desc)


@dataclass
class LazyLimit:
    """The tangent-kernel predictors that the teacher-student sweep tends to as ``tau`` grows (:func:`lazy_limit`).

    ``at_time``: test predictions ``(n_test,)`` of kernel gradient descent run for the sweep's number of steps;
    ``ridgeless``: its limit ``t -> infinity`` (the minimum-norm interpolant when the kernel is invertible);
    ``train_loss_at_time`` / ``test_loss_at_time`` / ``test_loss_ridgeless``: their losses ``(1/2n) sum (f - y)^2``;
    ``fraction_fitted``: fraction of the kernel's eigen-directions with ``rate * lambda * steps >= 1``, those the run
    has had time to fit; ``rank``: rank of the training kernel (below ``n`` when under-parameterised).
    """

    at_time: torch.Tensor
    ridgeless: torch.Tensor
    train_loss_at_time: float
    test_loss_at_time: float
    test_loss_ridgeless: float
    fraction_fitted: float
    rank: int


def lazy_limit(task: TeacherStudent, m: int, steps: int, *, seed: int, scale: float = 0.1) -> LazyLimit:
    """Kernel regression with the tangent kernel at the initialisation of :func:`teacher_student_sweep`, in float64.

    ``seed`` and the task's dtype must be those of the sweep, so that both start from the same draw.

    The sweep's student at scale ``tau`` is ``tau`` times the draw at ``tau = 1`` (same ``seed``), so its tangent
    kernel is ``tau^2 K`` and, with the step ``m * scale / tau^2`` (:func:`paper_step` above its cap, ``tau >= 0.1``),
    its linearisation moves in function space by ``f <- f - (m * scale / n) K (f - y)`` whatever ``tau``. Chizat et
    al.'s theorem says the network follows that linearisation as ``tau`` grows; this function computes where the
    linearisation goes, independently of any training: the closed form of :func:`kernel_gd_predict` on ``K`` from
    :func:`dynbook_lib.ntk.empirical_ntk`.
    """
    # The draw depends on the dtype (torch.randn in float32 and float64 give different numbers): draw as the sweep
    # does, in the task's dtype, then compute in float64.
    one = torch.ones(1, dtype=task.X.dtype, device=task.X.device)
    net = two_layer_init(m, task.X.shape[1], one, seed=seed).single(0).double()
    x, y = task.X.double(), task.y.double()
    x_test, y_test = task.X_test.double(), task.y_test.double()
    k_train = empirical_ntk(net, x, layout="trace")
    k_test = empirical_ntk(net, x_test, x, layout="trace")
    rate = m * scale / x.shape[0]
    at_time = kernel_gd_predict(k_train, torch.cat([k_train, k_test]), y, rate=rate, steps=steps)
    ridgeless = kernel_gd_predict(k_train, k_test, y)
    lam = torch.linalg.eigvalsh(k_train)
    n = x.shape[0]
    return LazyLimit(
        at_time=at_time[n:],
        ridgeless=ridgeless,
        train_loss_at_time=float(half_mse(at_time[:n], y)),
        test_loss_at_time=float(half_mse(at_time[n:], y_test)),
        test_loss_ridgeless=float(half_mse(ridgeless, y_test)),
        fraction_fitted=float((rate * lam * steps >= 1).double().mean()),
        rank=int(torch.linalg.matrix_rank(k_train, hermitian=True)),
    )


def relative_distance(predictions: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``||f - g|| / ||g||`` over the last dimension (``f`` may carry leading batch dimensions)."""
    reference = reference.to(predictions.dtype)
    return (predictions - reference).norm(dim=-1) / reference.norm()


def shallow_net(d: int, width: int, *, seed: int, activation: type[nn.Module] = nn.ReLU,
                dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """``Linear(d, width) - activation - Linear(width, 1)`` with PyTorch's default init, drawn from ``seed``."""
    return mlp((d, width, 1), seed=seed, activation=activation, dtype=dtype)


def ntk_step(model: nn.Module, x: torch.Tensor) -> float:
    """``1 / lambda_max(K / n)`` for the tangent kernel ``K`` of ``model`` (outputs ``(n, 1)``) on ``x``: half the
    stability limit of gradient descent on ``(1/2n) ||f - y||^2`` near init."""
    k = empirical_ntk(model, x, layout="trace")
    return 1.0 / float(torch.linalg.eigvalsh(k / x.shape[0])[-1])


class _AsRow(nn.Module):
    """``(n, 1)`` outputs as one row ``(1, n)``, the batched layout of :func:`train_gd`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).T


@dataclass
class LinearizationGap:
    """Result of :func:`linearization_gap`, one entry per ``alpha``.

    Attributes:
        alphas: the scales ``(A,)``.
        eta: the step of the unscaled model, ``1 / lambda_max(K / n)``.
        gap: ``sup_t`` RMS over the training inputs of ``F_alpha(t) - F_lin(t)``, shape ``(A,)``.
        displacement: ``||w_T - w0|| / ||w0||`` at the end, shape ``(A,)``.
        gap_curve: RMS gap at each record, shape ``(T, A)``.
        loss, loss_linear: training losses of the two models, shape ``(T, A)``.
        times: step counts of the records ``(T,)``.
    """

    alphas: torch.Tensor
    eta: float
    gap: torch.Tensor
    displacement: torch.Tensor
    gap_curve: torch.Tensor
    loss: torch.Tensor
    loss_linear: torch.Tensor
    times: torch.Tensor


def linearization_gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alphas: torch.Tensor, steps: int, *,
                      record_every: int = 10) -> LinearizationGap:
    """Train ``F_alpha = alpha (f(w) - f(w0))`` and its linearisation ``alpha J(w0) (w - w0)`` side by side.

    Both start at ``w0`` (the parameters of ``model``, left untouched) and take ``steps`` full-batch gradient steps of
    size ``eta / alpha^2`` on ``(1/2n) ||F - y||^2``, with ``eta = 1 / lambda_max(K/n)`` from the NTK at ``w0``; in
    function space both then move at an ``alpha``-independent speed, and the theorem bounds their gap by
    ``O(1/alpha)`` for a smooth model (Chizat, Oyallon & Bach 2019, Thm 2.2, finite horizon).

    Args:
        model: outputs ``(n, 1)``.
        x, y: training inputs ``(n, ...)`` and targets ``(n,)``.
        alphas: the scales, shape ``(A,)``.
        steps: gradient steps per model.
        record_every: record every this many steps.
    """
    eta = ntk_step(model, x)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    norm0 = torch.sqrt(sum((p**2).sum() for p in w0.values()))
    gaps, curves, disps, losses, losses_lin = [], [], [], [], []
    for alpha in progress(alphas.tolist(), desc="alpha", leave=False):
        a = torch.tensor([alpha], dtype=x.dtype, device=x.device)
        lr = eta / a**2
        net = copy.deepcopy(model)
        nonlinear = Rescaled(_AsRow(net), a)
        linear = Rescaled(_AsRow(LinearizedModel(model, centered=True)), a, subtract_initial=False)
        run = train_gd(nonlinear, x, y, lr, steps, record_every=record_every, keep_outputs=True)
        run_lin = train_gd(linear, x, y, lr, steps, record_every=record_every, keep_outputs=True)
        curve = torch.sqrt(((run.outputs - run_lin.outputs) ** 2).mean(-1))[:, 0]
        curves.append(curve)
        gaps.append(curve.max())
        disps.append(torch.sqrt(sum(((p.detach() - w0[n]) ** 2).sum() for n, p in net.named_parameters())) / norm0)
        losses.append(run.train_loss[:, 0])
        losses_lin.append(run_lin.train_loss[:, 0])
    return LinearizationGap(alphas, eta, torch.stack(gaps), torch.stack(disps), torch.stack(curves, 1),
                            torch.stack(losses, 1), torch.stack(losses_lin, 1), run.times)


def neuron_positions(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The plane picture of the paper's 2-D figure: neuron ``i`` drawn at ``|b_i| a_i`` (shape of ``a``)."""
    return b.abs().unsqueeze(-1) * a


__all__ = [
    "GDRun",
    "LAZY_FAST",
    "LAZY_FULL",
    "LazyTrainingConfig",
    "LinearizationGap",
    "Rescaled",
    "TwoLayerReLU",
    "half_mse",
    "linearization_gap",
    "loglog_slope",
    "neuron_positions",
    "ntk_step",
    "paper_step",
    "shallow_net",
    "teacher_student_sweep",
    "train_gd",
    "two_layer_init",
]
