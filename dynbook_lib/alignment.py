"""Neural feature alignment (Baratin et al. 2021): the empirical NTK tracked along training.

A network is trained with SGD on cross-entropy, optionally rescaled as ``alpha (f(w) - f(w0))`` with step
``lr / alpha^2`` (``alpha >> 1`` lazy, ``alpha < 1`` "hasty", George, Lajoie & Baratin 2022). At logged steps the
full empirical NTK ``K`` (``n O x n O``, :func:`dynbook_lib.ntk.empirical_ntk`) of each probe set is measured and
centred over the probe's examples, ``K_c = (C x I_O) K (C x I_O)`` with ``C = I - 11^T / n`` (the kernel of the
tangent features minus their mean over the probe: Cortes et al. 2012's centring, output by output). Logged:

* the alignment ``A = CKA(K_c, y y^T)`` with the one-hot targets flattened to ``n O`` entries
  (:func:`dynbook_lib.kernels.target_alignment`); since ``K_c`` is centred this equals
  ``y_c^T K_c y_c / (||K_c||_F ||y_c||^2)`` up to a factor that depends on the labels only, so gains
  ``A_t / A_0`` are the same for both;
* the effective rank and the top eigenvalue of ``K_c``, and its whole spectrum;
* the uncentred trace ``Tr K = ||Phi||_F^2`` of the probe's tangent features, for the complexity measure;
* the path length ``sum ||w_{t+1} - w_t||`` walked since the previous log, and the accuracy on each probe.

Without centring, the constant direction (every example's logits moving together) holds most of the spectrum and
hides its change along training.

The complexity measure of Baratin et al. (Sec. 5) sums the Rademacher complexities of the linear models met along
training, ``C = sum_t ||w_{t+1} - w_t|| ||Phi_t||_F / n`` over the ``n`` training examples; :func:`complexity`
estimates it from the logs, holding ``||Phi_t||_F`` at its last logged value between logs and estimating it from a
probe of training examples, ``||Phi_t||_F^2 ~ (n / n_probe) Tr K_probe``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from dynbook_lib.core.progress import progress
from dynbook_lib.core.seeding import make_generator
from dynbook_lib.kernels import effective_rank, one_hot_targets, target_alignment
from dynbook_lib.lazy import Rescaled
from dynbook_lib.models import minibatches, mlp
from dynbook_lib.ntk import empirical_ntk


def standardize(x_train: torch.Tensor, x_other: torch.Tensor,
                min_std: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise both sets with the training mean and std, the std clamped below at ``min_std`` (digits has
    constant pixels)."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(min_std)
    return (x_train - mean) / std, (x_other - mean) / std


def relabel(y: torch.Tensor, fraction: float, n_classes: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Give a random *different* label to ``fraction`` of the examples; returns (labels, mask of relabelled)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"the label-noise fraction must be in [0, 1], got {fraction}")
    gen = make_generator(seed)
    n = len(y)
    chosen = torch.randperm(n, generator=gen)[: int(round(fraction * n))]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    shift = torch.randint(1, n_classes, (n,), generator=gen)
    noisy = torch.where(mask, (y + shift) % n_classes, y)
    return noisy, mask


def center_examples(k: torch.Tensor) -> torch.Tensor:
    """``(C x I_O) K (C x I_O)`` for a full NTK ``(n, O, n, O)``: the kernel of the tangent features centred over the
    ``n`` examples, output by output.

    Example:
        >>> k = torch.ones(3, 2, 3, 2, dtype=torch.float64)  # every example has the same features
        >>> float(center_examples(k).abs().max())
        0.0
    """
    if k.ndim != 4 or k.shape[:2] != k.shape[2:]:
        raise ValueError(f"center_examples needs a full kernel of shape (n, O, n, O), got {tuple(k.shape)}")
    k = k - k.mean(0, keepdim=True)
    return k - k.mean(2, keepdim=True)


@dataclass
class KernelLog:
    """Measurements at each logged step.

    ``steps``; per probe set ``alignment``, ``trace`` (uncentred ``Tr K``) and ``accuracy`` (on the probe's own
    labels), and for the probes asked for ``effective_rank``, ``top_eigenvalue`` and ``spectra`` (decreasing
    eigenvalues of ``K_c``); per watched group ``accuracy`` too; ``test_accuracy``, ``train_loss`` (on the labels trained on), ``path`` (``sum ||dw||`` since
    the previous log, 0 at the first) and ``probe_sizes``.
    """

    steps: list[int] = field(default_factory=list)
    alignment: dict[str, list[float]] = field(default_factory=dict)
    effective_rank: dict[str, list[float]] = field(default_factory=dict)
    top_eigenvalue: dict[str, list[float]] = field(default_factory=dict)
    trace: dict[str, list[float]] = field(default_factory=dict)
    spectra: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    path: list[float] = field(default_factory=list)
    probe_sizes: dict[str, int] = field(default_factory=dict)

    def gain(self, probe: str, index: int = -1) -> float:
        """Alignment at log ``index`` divided by the alignment at the start."""
        return self.alignment[probe][index] / self.alignment[probe][0]

    def peak(self) -> int:
        """Index of the log with the highest test accuracy (the first one on ties)."""
        return max(range(len(self.test_accuracy)), key=lambda i: (self.test_accuracy[i], -i))


def log_steps(total: int, first: int = 5, ratio: float = 1.15) -> list[int]:
    """``0`` and ``first * ratio^k`` rounded, up to ``total`` (the paper's logging schedule), and ``total``."""
    steps, k = {0, total}, 0
    while first * ratio**k < total:
        steps.add(int(round(first * ratio**k)))
        k += 1
    return sorted(steps)


def learned_before_auc(easy: list[float] | torch.Tensor, hard: list[float] | torch.Tensor) -> float:
    """Area under the learning-order curve ``(F_easy(t), F_hard(t))``: the fractions of two groups fitted at the same
    logged steps, each made non-decreasing (running maximum), joined to ``(0, 0)`` before and ``(1, 1)`` after.

    If every example, once fitted, stays fitted, this is ``P(T_hard < T_easy)`` (ties count half) for the fitting
    times ``T`` of a random example of each group, examples never fitted counting as fitted last; it is read off
    the two fitted fractions, so it does not depend on how fast training is, only on the order. 0: every easy
    example is fitted before any hard one; 0.5: no order.

    Example:
        >>> learned_before_auc([0.0, 1.0, 1.0], [0.0, 0.0, 1.0])  # all easy ones first
        0.0
        >>> learned_before_auc([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])  # together
        0.5
    """
    x = torch.as_tensor(easy, dtype=torch.float64).cummax(0).values
    y = torch.as_tensor(hard, dtype=torch.float64).cummax(0).values
    if x.ndim != 1 or x.shape != y.shape or not len(x) or float(min(x.min(), y.min())) < 0 or \
            float(max(x.max(), y.max())) > 1:
        raise ValueError("learned_before_auc needs two curves of fitted fractions in [0, 1] logged at the same steps")
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    x, y = torch.cat([zero, x, one]), torch.cat([zero, y, one])
    return float(torch.trapezoid(y, x))


def complexity(log: KernelLog, n_train: int, probe: str = "train") -> float:
    """``sum_t ||w_{t+1} - w_t|| ||Phi_t||_F / n``, estimated from a log: ``||Phi_t||_F^2`` over the ``n`` training
    examples as ``(n / n_probe) Tr K`` of a probe of ``n_probe`` training examples, at the last logged step.

    Example:
        >>> log = KernelLog(steps=[0, 5], path=[0.0, 2.0], trace={"train": [4.0, 9.0]}, probe_sizes={"train": 4})
        >>> complexity(log, n_train=16)  # 2 * sqrt(4 * 16 / 4) / 16
        0.5
    """
    n_probe = log.probe_sizes[probe]
    total = sum(log.path[k] * (log.trace[probe][k - 1] * n_train / n_probe) ** 0.5 for k in range(1, len(log.steps)))
    return total / n_train


def _measure(log: KernelLog, name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int,
             spectrum: bool) -> None:
    full = empirical_ntk(model, x)  # (n, O, n, O)
    k = center_examples(full).reshape(len(x) * n_classes, -1)
    target = one_hot_targets(y, n_classes, dtype=k.dtype).reshape(-1)
    log.alignment.setdefault(name, []).append(float(target_alignment(k, target)))
    log.trace.setdefault(name, []).append(float(torch.einsum("ioio->", full)))
    log.probe_sizes[name] = len(x)
    if spectrum:  # the eigendecomposition costs more than the kernel itself
        lam = torch.linalg.eigvalsh(k)
        log.effective_rank.setdefault(name, []).append(float(effective_rank(lam.clamp_min(0), eigenvalues=True)))
        log.top_eigenvalue.setdefault(name, []).append(float(lam[-1]))
        log.spectra.setdefault(name, []).append(lam.flip(0).cpu())


def train_and_track(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    probes: dict[str, tuple[torch.Tensor, torch.Tensor]],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    alpha: float = 1.0,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    decay_to: str = "zero",
    log_at: list[int] | None = None,
    n_classes: int = 10,
    watch: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    on_log: Callable[[int, nn.Module], None] | None = None,
    spectra: tuple[str, ...] | None = None,
    desc: str = "SGD",
) -> KernelLog:
    """SGD on the mean cross-entropy of ``alpha (f - f0)`` with step ``lr / alpha^2``, logging the NTK of each probe.

    Args:
        model: classifier with ``n_classes`` logits (trained in place, on the device of its parameters).
        x, y: training inputs and (possibly noisy) labels, on the model's device.
        probes: name -> (inputs, labels) on which the kernel is measured, with the labels its alignment is to.
        test: (inputs, labels) for the test accuracy.
        steps, lr, batch_size, seed: SGD settings (minibatches drawn from ``seed``).
        alpha: output scale (``1`` the standard network).
        momentum, weight_decay: of ``torch.optim.SGD``.
        decay_to: ``"zero"`` (torch's weight decay, the penalty ``||w||^2 / 2``) or ``"init"`` (the penalty
            ``||w - w0||^2 / 2``: the ridge penalty of the tangent model, under which a lazy run stays a regularised
            kernel regression; decay towards 0 would move ``alpha (f(w) - f(w0))`` by about ``alpha`` times the
            shrinkage of ``f``, a drift that grows with ``alpha``). To keep the same ridge on ``alpha (w - w0)``
            across ``alpha`` (the step is ``lr / alpha^2``), pass ``weight_decay * alpha^2``.
        log_at: steps at which to measure (default :func:`log_steps`).
        watch: name -> (inputs, labels) whose accuracy only is logged (no kernel).
        on_log: called as ``on_log(step, scaled_model)`` at each logged step (to take snapshots).
        spectra: probes whose spectrum, effective rank and top eigenvalue are logged too (default: all).
    """
    if decay_to not in ("zero", "init"):
        raise ValueError(f"unknown decay_to {decay_to!r}; expected 'zero' or 'init'")
    scaled = Rescaled(model, alpha) if alpha != 1.0 else model
    to_init = decay_to == "init" and weight_decay > 0
    opt = torch.optim.SGD(model.parameters(), lr=lr / alpha**2, momentum=momentum,
                          weight_decay=0.0 if to_init else weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    initial = [p.detach().clone() for p in params] if to_init else []
    gen = make_generator(seed)
    log_at = set(log_steps(steps) if log_at is None else log_at)
    log = KernelLog()
    batches = minibatches(len(x), batch_size, gen)
    groups = {**probes, **(watch or {})}
    path = torch.zeros((), dtype=torch.float64, device=x.device)
    for step in progress(range(steps + 1), desc=desc, leave=False):
        if step in log_at:
            log.steps.append(step)
            log.path.append(float(path))
            path.zero_()
            for name, (px, py) in probes.items():
                _measure(log, name, scaled, px, py, n_classes, spectra is None or name in spectra)
            with torch.no_grad():
                for name, (gx, gy) in groups.items():
                    log.accuracy.setdefault(name, []).append(float((scaled(gx).argmax(1) == gy).double().mean()))
                log.test_accuracy.append(float((scaled(test[0]).argmax(1) == test[1]).double().mean()))
                log.train_loss.append(float(nn.functional.cross_entropy(scaled(x), y)))
                if on_log is not None:
                    on_log(step, scaled)
        if step == steps:
            break
        idx = next(batches).to(x.device)
        opt.zero_grad()
        nn.functional.cross_entropy(scaled(x[idx]), y[idx]).backward()
        with torch.no_grad():
            for p, p0 in zip(params, initial):  # the gradient of (weight_decay / 2) ||w - w0||^2
                p.grad.add_(p - p0, alpha=weight_decay)
        before = [p.detach().clone() for p in params]
        opt.step()
        with torch.no_grad():
            path += torch.stack([(p - b).pow(2).sum() for p, b in zip(params, before)]).sum().sqrt().double()
    return log


@dataclass(frozen=True)
class AlignmentConfig:
    """Sizes of the chapter (``ALIGNMENT_FAST`` / ``ALIGNMENT_FULL``).

    The full profile's VGG-11 has half the usual channels (2.3 M parameters): the NTK of a 100-image probe holds the
    tangent features of its 1000 rows at once, 9 GB in float32 at this width, four times that at full width.

    Alignment runs: ``data`` (``"digits"``: scikit-learn's 1797 digits, ``n_test`` held out; ``"cifar10"``: the first
    ``n_train`` training images), ``model`` (``"mlp"`` with ``widths``, or ``"vgg11"`` with ``cnn_width``), SGD
    ``lr``, ``momentum``, ``weight_decay``, ``batch_size``, ``epochs``; kernels on ``probe_size`` examples per probe;
    ``noise`` the label-noise fraction of the easy-vs-relabelled run, ``sweep_noises`` the levels of the sweep;
    ``alphas`` the output scales of the lazy-vs-hasty comparison; kernels logged at steps ``5 log_ratio^k``.
    Yin-yang toy: ``yy_n`` points, ``yy_widths``, ``yy_alphas``, ``yy_steps``, ``yy_lr``, ``yy_batch_size``.
    Analytical model: ``hasty_theta0``, ``hasty_lr``, ``hasty_steps``.
    """

    data: str
    model: str
    n_train: int
    n_test: int
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    probe_size: int
    noise: float
    sweep_noises: tuple[float, ...]
    alphas: tuple[float, ...]
    log_ratio: float = 1.15
    widths: tuple[int, ...] = (64, 256, 256, 10)
    cnn_width: float = 1.0
    dtype: torch.dtype = torch.float32
    yy_n: int = 1000
    yy_widths: tuple[int, ...] = (2, 64, 64, 64, 3)
    yy_alphas: tuple[float, ...] = (0.5, 1.0, 10.0)
    yy_steps: int = 1500
    yy_lr: float = 0.2
    yy_batch_size: int = 100
    hasty_theta0: float = 0.01
    hasty_lr: float = 2e-3
    hasty_steps: int = 5000

    @property
    def steps(self) -> int:
        """SGD steps of one run: ``epochs`` passes over ``n_train`` examples."""
        return self.epochs * self.n_train // self.batch_size


ALIGNMENT_FAST = AlignmentConfig(
    data="digits", model="mlp", n_train=1437, n_test=360, epochs=30, batch_size=32, lr=0.05, momentum=0.9,
    weight_decay=0.0, probe_size=100, noise=0.3, sweep_noises=(0.0, 0.15, 0.3, 0.45, 0.6), alphas=(0.5, 1.0, 8.0),
    log_ratio=1.2,
)
ALIGNMENT_FULL = AlignmentConfig(
    data="cifar10", model="vgg11", n_train=10_000, n_test=10_000, epochs=60, batch_size=128, lr=0.01, momentum=0.9,
    weight_decay=5e-4, probe_size=100, noise=0.2, sweep_noises=(0.0, 0.1, 0.2, 0.35, 0.5), alphas=(0.5, 1.0, 8.0),
    cnn_width=0.5,
    yy_n=3000, yy_steps=6000, hasty_steps=50_000, hasty_lr=2e-4,
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
ALIGNMENT_SMOKE = replace(ALIGNMENT_FULL, n_train=64, n_test=32, epochs=1, batch_size=16, probe_size=4,
                          yy_n=300, yy_steps=400)


@dataclass
class Task:
    """A classification task on one device: training and test inputs and labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: torch.device | str) -> "Task":
        return Task(*(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)))


def load_task(cfg: AlignmentConfig, *, seed: int, data_root: str | None = None, download: bool = True) -> Task:
    """The chapter's data: digits split at random (``seed``) and standardised, or the first ``cfg.n_train`` CIFAR-10
    training images and ``cfg.n_test`` test images (downloaded into ``data_root``)."""
    if cfg.data == "digits":
        from dynbook_lib.data.offline import digits_tensors

        d = digits_tensors(cfg.dtype)
        order = torch.randperm(len(d["y"]), generator=make_generator(seed))
        train, test = order[: cfg.n_train], order[cfg.n_train : cfg.n_train + cfg.n_test]
        x_train, x_test = standardize(d["x"][train], d["x"][test])
        return Task(x_train, d["y"][train], x_test, d["y"][test])
    if cfg.data == "cifar10":
        from dynbook_lib.data.downloads import cifar10_tensors, data_dir

        d = cifar10_tensors(data_root or data_dir("cifar10"), download=download)
        return Task(d["x_train"][: cfg.n_train].to(cfg.dtype), d["y_train"][: cfg.n_train],
                    d["x_test"][: cfg.n_test].to(cfg.dtype), d["y_test"][: cfg.n_test])
    raise ValueError(f"unknown data {cfg.data!r}; expected digits or cifar10")


def build_model(cfg: AlignmentConfig, *, seed: int) -> nn.Module:
    """The chapter's network, its init drawn from ``seed``: the MLP ``cfg.widths`` or VGG-11 of width
    ``cfg.cnn_width``."""
    if cfg.model == "mlp":
        return mlp(cfg.widths, seed=seed, dtype=cfg.dtype)
    if cfg.model == "vgg11":
        from dynbook_lib.lazy_cnn import vgg11

        return vgg11(10, width=cfg.cnn_width, seed=seed).to(cfg.dtype)
    raise ValueError(f"unknown model {cfg.model!r}; expected mlp or vgg11")


@dataclass
class Run:
    """One training run: its ``log``, the ``noise`` and ``alpha`` it used and the ``relabelled`` mask of the training
    set."""

    log: KernelLog
    noise: float
    alpha: float
    relabelled: torch.Tensor


def run_alignment(task: Task, cfg: AlignmentConfig, *, noise: float, alpha: float = 1.0, seed: int) -> Run:
    """Train the chapter's network on ``task`` with a ``noise`` fraction of training labels changed, logging the NTK
    on four probes of ``cfg.probe_size`` examples: ``test`` (true labels), ``train`` (a random training subset, the
    labels trained on), and with noise ``clean`` and ``relabelled`` (training examples whose label was kept /
    changed, with the labels trained on). The spectrum is computed for the ``test`` probe only (the
    eigendecomposition costs more than the kernel). Weight decay (full profile) pulls towards the initialisation
    with strength ``cfg.weight_decay * alpha^2`` at every ``alpha``: with the step ``lr / alpha^2`` this is the same
    ridge ``(wd / 2) ||v||^2`` on ``v = alpha (w - w0)``, the coordinates in which the scaled model moves, so every
    run of the comparison carries the same regulariser in function space."""
    device = task.x_train.device
    y_noisy, mask = relabel(task.y_train.cpu(), noise, 10, seed=seed + 1)
    y_noisy = y_noisy.to(device)
    p = cfg.probe_size
    pick = torch.randperm(len(y_noisy), generator=make_generator(seed + 2))[:p].to(device)
    probes = {"test": (task.x_test[:p], task.y_test[:p]), "train": (task.x_train[pick], y_noisy[pick])}
    if noise > 0:
        for name, rows in (("clean", (~mask).nonzero()[:p, 0]), ("relabelled", mask.nonzero()[:p, 0])):
            rows = rows.to(device)
            probes[name] = (task.x_train[rows], y_noisy[rows])
    model = build_model(cfg, seed=seed).to(device)
    log = train_and_track(model, task.x_train, y_noisy, probes, (task.x_test, task.y_test), steps=cfg.steps,
                          lr=cfg.lr, batch_size=cfg.batch_size, seed=seed + 3, alpha=alpha, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay * alpha**2, decay_to="init",
                          log_at=log_steps(cfg.steps, ratio=cfg.log_ratio),
                          spectra=("test",), desc=f"noise {noise:g}, alpha {alpha:g}")
    return Run(log, noise, alpha, mask)



@dataclass
class YinYangRun:
    """The yin-yang toy at one ``alpha``: the ``log`` (per-class training accuracy in ``log.accuracy``) and the
    predicted class on ``grid`` at each snapshot step, ``regions[step]``."""

    log: KernelLog
    alpha: float
    regions: dict[int, torch.Tensor]


YIN_YANG_CLASSES = ("yin", "yang", "dots")


def yin_yang_run(cfg: AlignmentConfig, alpha: float, *, seed: int, grid: torch.Tensor,
                 snapshots: tuple[int, ...]) -> YinYangRun:
    """Train the ``cfg.yy_widths`` MLP as ``alpha (f - f0)`` (plain SGD, step ``cfg.yy_lr / alpha^2``) on
    ``cfg.yy_n`` yin-yang points, logging each class's training accuracy every 25 steps and the predicted class on
    ``grid`` at the ``snapshots`` steps."""
    from dynbook_lib.data.synthetic import yin_yang

    x, y = yin_yang(cfg.yy_n, seed=seed, dtype=cfg.dtype)
    x_test, y_test = yin_yang(cfg.yy_n, seed=seed + 1, dtype=cfg.dtype)
    watch = {name: (x[y == c], y[y == c]) for c, name in enumerate(YIN_YANG_CLASSES)}
    regions: dict[int, torch.Tensor] = {}

    def snapshot(step: int, model: nn.Module) -> None:
        if step in snapshots:
            regions[step] = model(grid.to(cfg.dtype)).argmax(1)

    model = mlp(cfg.yy_widths, seed=seed, dtype=cfg.dtype)
    log_at = sorted(set(range(0, cfg.yy_steps + 1, 25)) | set(snapshots))
    log = train_and_track(model, x, y, {}, (x_test, y_test), steps=cfg.yy_steps, lr=cfg.yy_lr,
                          batch_size=cfg.yy_batch_size, seed=seed + 2, alpha=alpha, log_at=log_at, n_classes=3,
                          watch=watch, on_log=snapshot, desc=f"yin-yang, alpha {alpha:g}")
    return YinYangRun(log, alpha, regions)
