"""KFAC and EKFAC as ``torch.optim.Optimizer`` s (Martens & Grosse 2015; George, Laurent et al. 2018).

For each ``nn.Linear`` layer with input ``a~ = [a, 1]`` and per-example output gradient ``g`` the optimizer keeps
running averages of ``A = E[a~ a~^T]`` and ``G = E[g g^T]`` and, every ``basis_every`` steps, their eigenbases
``U_A``, ``U_G`` (the Kronecker-factored eigenbasis, KFE). The update of the layer's matrix ``M = [W | b]`` is

* KFAC: ``U_G [ (U_G^T grad_M U_A) / (lambda_G lambda_A^T + damping) ] U_A^T``;
* EKFAC: ``U_G [ (U_G^T grad_M U_A) / (s + damping) ] U_A^T`` with ``s = E[(U_G^T g)^2 (U_A^T a~)^2]`` re-estimated
  from the per-example statistics of every statistics step in the current (possibly stale) basis: the
  Frobenius-optimal diagonal in that basis, so never farther from the Fisher than KFAC with the same factors.

Statistics are gathered every ``stats_every`` steps (the other steps only precondition, at the cost of a few small
matrix products per layer), the eigenbases recomputed every ``basis_every`` steps: both amortise the cost.

Then momentum and the step ``lr`` as in SGD. Other parameters (not in a ``Linear`` layer) take the plain SGD step.

**Scale conventions.** The statistics are those of the gradients of the loss the user back-propagates (the
*empirical* Fisher; pass a loss on targets sampled from the model for the true Fisher). With a loss that is a mean
over a batch of ``B`` examples, the per-example gradient is ``B`` times the output gradient the hook sees, so
``G = (1/B) sum_i (B g_i)(B g_i)^T`` and ``A = (1/B) sum_i a~_i a~_i^T``: the matrices of :mod:`dynbook_lib.fisher`
for the empirical Fisher of the mean per-example loss. The damping is added to every eigenvalue, as in
:meth:`dynbook_lib.fisher.KFACFisher.solve`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from dynbook_lib.core.progress import progress
from dynbook_lib.fisher import BlockDiagFisher, EKFACFisher, KFACFisher, fisher_factors
from dynbook_lib.models import minibatches, mlp

Mode = Literal["kfac", "ekfac"]


class KFACOptimizer(torch.optim.Optimizer):
    """KFAC or EKFAC preconditioned SGD with momentum for the ``nn.Linear`` layers of ``model``.

    Args:
        model: the network; its ``Linear`` layers are preconditioned, every other trainable parameter takes SGD steps.
        lr: step size.
        mode: ``"kfac"`` or ``"ekfac"``.
        damping: added to every eigenvalue (``lambda_G lambda_A`` or ``s``) before dividing.
        momentum: heavy-ball momentum on the preconditioned direction.
        basis_every: recompute the eigenbases every this many steps (amortised; KFAC's factors are also only
            inverted then).
        stats_every: gather statistics (``A``, ``G`` and EKFAC's ``s``) every this many steps; see
            :attr:`wants_statistics`.
        stat_decay: weight of the past in the running averages of ``A``, ``G`` and ``s``.

    Call ``loss.backward()`` then ``step()`` as with any optimizer: the layer inputs of the forward pass and the
    output gradients of the *first* backward pass through it are captured by hooks (only while ``model.training``).
    For the true Fisher, back-propagate first a loss on targets sampled from the model (``retain_graph=True``), then
    ``zero_grad()`` and the training loss (see :func:`train_autoencoder`).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        *,
        mode: Mode = "ekfac",
        damping: float = 1e-3,
        momentum: float = 0.9,
        basis_every: int = 20,
        stats_every: int = 1,
        stat_decay: float = 0.95,
    ) -> None:
        if mode not in ("kfac", "ekfac"):
            raise ValueError(f"unknown mode {mode!r}; expected kfac or ekfac")
        if lr <= 0 or damping < 0 or not 0 <= momentum < 1 or basis_every < 1 or stats_every < 1:
            raise ValueError(
                "need lr > 0, damping >= 0, 0 <= momentum < 1, basis_every >= 1 and stats_every >= 1; got "
                f"lr={lr}, damping={damping}, momentum={momentum}, basis_every={basis_every}, stats_every={stats_every}"
            )
        if not 0 <= stat_decay < 1:
            raise ValueError(f"stat_decay must be in [0, 1), got {stat_decay}")
        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]
        super().__init__([p for p in model.parameters() if p.requires_grad], dict(lr=lr, momentum=momentum))
        self.mode, self.damping, self.basis_every, self.stats_every = mode, damping, basis_every, stats_every
        self._last_basis = -basis_every
        self.stat_decay = stat_decay
        self.model = model
        self.steps = 0
        self._captured: dict[nn.Linear, list[torch.Tensor]] = {}
        self._handles = []
        for layer in self.layers:
            self._handles.append(layer.register_forward_hook(self._capture))
        self.factors: dict[nn.Linear, dict[str, torch.Tensor]] = {layer: {} for layer in self.layers}

    @property
    def wants_statistics(self) -> bool:
        """Whether the coming step gathers statistics (a training loop can skip a sampled-Fisher backward when not)."""
        return self.steps % self.stats_every == 0

    def _capture(self, module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        """Save the layer input now and its output gradient when the backward pass reaches it."""
        if not (self.wants_statistics and self.model.training and torch.is_grad_enabled() and output.requires_grad):
            return
        x = inputs[0].detach()
        if module.bias is not None:
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        captured = self._captured[module] = [x]
        output.register_hook(lambda grad: captured.append(grad.detach()))

    def remove_hooks(self) -> None:
        """Detach the optimizer from the model (no more statistics are captured)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _update_statistics(self, layer: nn.Linear) -> None:
        a, g = self._captured[layer][:2]  # the first backward pass after the forward
        batch = a.shape[0]
        g = g * batch  # per-example gradients of a mean loss
        state = self.factors[layer]
        state.pop("inverse", None)
        decay = self.stat_decay if "A" in state else 0.0
        new_a, new_g = a.T @ a / batch, g.T @ g / batch
        state["A"] = decay * state["A"] + (1 - decay) * new_a if "A" in state else new_a
        state["G"] = decay * state["G"] + (1 - decay) * new_g if "G" in state else new_g
        if self.steps - self._last_basis >= self.basis_every:
            state["la"], state["ua"] = torch.linalg.eigh(state["A"])
            state["lg"], state["ug"] = torch.linalg.eigh(state["G"])
            state.pop("s", None)  # a new basis: the diagonal is re-estimated from scratch
        if self.mode == "ekfac":
            s = torch.einsum("ia,ib->ab", (g @ state["ug"]) ** 2, (a @ state["ua"]) ** 2) / batch
            state["s"] = self.stat_decay * state["s"] + (1 - self.stat_decay) * s if "s" in state else s

    def _precondition(self, layer: nn.Linear) -> None:
        state = self.factors[layer]
        grad = layer.weight.grad
        if layer.bias is not None:
            grad = torch.cat([grad, layer.bias.grad.unsqueeze(1)], dim=1)
        ua, ug = state["ua"], state["ug"]
        if "inverse" not in state:  # 1 / (eigenvalues + damping), cached until the statistics change
            scale = state["s"] if self.mode == "ekfac" else torch.outer(state["lg"], state["la"])
            state["inverse"] = 1.0 / (scale + self.damping)
        direction = ug @ ((ug.T @ grad @ ua) * state["inverse"]) @ ua.T
        if layer.bias is not None:
            layer.weight.grad.copy_(direction[:, :-1])
            layer.bias.grad.copy_(direction[:, -1])
        else:
            layer.weight.grad.copy_(direction)

    def eigenvalues(self) -> torch.Tensor:
        """Every layer's current curvature eigenvalues in the KFE, flattened: EKFAC's ``s`` or KFAC's
        ``lambda_G lambda_A^T`` (what the damping is added to); empty before the first statistics step."""
        values = []
        for state in self.factors.values():
            if "ua" in state:
                values.append((state["s"] if self.mode == "ekfac" else torch.outer(state["lg"], state["la"])).flatten())
        return torch.cat(values) if values else torch.zeros(0)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch.optim.Optimizer.step)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        new_basis = self.steps - self._last_basis >= self.basis_every and bool(self._captured)
        for layer in self.layers:
            if layer in self._captured and len(self._captured[layer]) >= 2:
                self._update_statistics(layer)
            if "ua" in self.factors[layer] and layer.weight.grad is not None:
                self._precondition(layer)
        self._captured = {}
        if new_basis:
            self._last_basis = self.steps
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].get("momentum")
                buf = p.grad.clone() if buf is None else buf.mul_(group["momentum"]).add_(p.grad)
                self.state[p]["momentum"] = buf
                p.add_(buf, alpha=-group["lr"])
        self.steps += 1
        return loss


# ---------------------------------------------------------------- the optimizer comparison of the chapter


def autoencoder(widths: tuple[int, ...], *, seed: int, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A mirrored tanh autoencoder ``widths[0] -> ... -> widths[-1] -> ... -> widths[0]`` returning logits (use the
    binary cross-entropy with logits), drawn from ``seed``."""
    return mlp(tuple(widths) + tuple(widths[-2::-1]), seed=seed, activation=nn.Tanh, dtype=dtype)


def make_optimizer(name: str, model: nn.Module, hyper: dict[str, float], *, basis_every: int = 10,
                   stats_every: int = 1):
    """``"sgd"`` (momentum 0.9), ``"adam"``, ``"kfac"`` or ``"ekfac"`` (momentum 0.9) with ``hyper`` = ``lr`` and,
    for the last two, ``damping``."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=hyper["lr"], momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=hyper["lr"])
    if name in ("kfac", "ekfac"):
        return KFACOptimizer(model, hyper["lr"], mode=name, damping=hyper["damping"], basis_every=basis_every,
                             stats_every=stats_every)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd, adam, kfac or ekfac")


@dataclass
class TrainingCurve:
    """Full-batch training loss recorded along one run: ``iterations``, cumulative optimizer ``seconds`` (training
    steps only, the recording excluded) and ``loss``, each of shape ``(T,)``; a diverged run ends with an infinite
    loss. ``snapshots`` holds copies of the model at the steps asked for, ``eigenvalues`` the final curvature
    eigenvalues of a KFAC or EKFAC run (:meth:`KFACOptimizer.eigenvalues`)."""

    name: str
    hyper: dict[str, float]
    iterations: torch.Tensor
    seconds: torch.Tensor
    loss: torch.Tensor
    snapshots: dict[int, nn.Module] = field(default_factory=dict)
    eigenvalues: torch.Tensor | None = None

    @property
    def final(self) -> float:
        return float(self.loss[-1])

    def iterations_to(self, target: float) -> float:
        """First recorded iteration with loss <= ``target`` (``inf`` if never)."""
        hit = (self.loss <= target).nonzero()
        return float(self.iterations[hit[0, 0]]) if len(hit) else math.inf


def bernoulli_on(generator: torch.Generator, probs: torch.Tensor) -> torch.Tensor:
    """Bernoulli draws with ``probs``, made on the generator's device and returned on ``probs``'s: a CPU generator
    gives the same draws whether the model runs on the CPU or a GPU (PyTorch refuses a CPU generator for CUDA
    tensors).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> bernoulli_on(g, torch.tensor([0.0, 1.0])).tolist()
        [0.0, 1.0]
    """
    return torch.bernoulli(probs.to(generator.device), generator=generator).to(probs.device)


def train_autoencoder(name: str, hyper: dict[str, float], x: torch.Tensor, *, widths: tuple[int, ...], steps: int,
                      batch_size: int, seed: int, record_every: int = 10, basis_every: int = 10,
                      stats_every: int = 1, sampled_fisher: bool = True,
                      snapshot_steps: tuple[int, ...] = (), divergence_factor: float = 10.0) -> TrainingCurve:
    """Train a fresh :func:`autoencoder` (same init for every optimizer at a given ``seed``) on inputs in ``[0, 1]``
    with the mean binary cross-entropy (summed over pixels, averaged over the batch).

    With ``sampled_fisher`` the KFAC/EKFAC statistics come from a backward pass of the loss on pixels sampled from the
    model's Bernoulli outputs (a one-sample estimate of the true Fisher, as in the papers), at the price of a second
    backward pass per step; otherwise from the training loss (the empirical Fisher). ``snapshot_steps``: keep a copy
    of the model before each of these steps (``steps`` for the final one). A run whose recorded loss exceeds
    ``divergence_factor`` times its initial loss, or whose outputs are not finite, has diverged: it stops there and
    ends with an infinite loss."""
    model = autoencoder(widths, seed=seed, dtype=x.dtype).to(x.device)
    opt = make_optimizer(name, model, hyper, basis_every=basis_every, stats_every=stats_every)
    gen = torch.Generator().manual_seed(seed)

    def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(targets)

    def loss_on(inputs: torch.Tensor) -> torch.Tensor:
        return bce(model(inputs), inputs)

    iterations, seconds, losses, snapshots, elapsed = [], [], [], {}, 0.0
    batches = minibatches(len(x), batch_size, gen)
    for step in range(steps + 1):
        if step in snapshot_steps:  # a fresh network with the weights: a deep copy would carry the optimizer's hooks
            snapshots[step] = autoencoder(widths, seed=seed, dtype=x.dtype).to(x.device)
            snapshots[step].load_state_dict(model.state_dict())
        if step % record_every == 0 or step == steps:
            with torch.no_grad():
                iterations.append(step)
                seconds.append(elapsed)
                losses.append(float(loss_on(x)) / x.shape[1])
            if not losses[-1] <= divergence_factor * losses[0]:  # diverged (NaN compares False)
                losses[-1] = math.inf
                break
        if step == steps:
            break
        batch = x[next(batches)]
        start = time.perf_counter()
        opt.zero_grad()
        logits = model(batch)
        if not torch.isfinite(logits).all():  # diverged: no Bernoulli draws from NaN probabilities
            iterations.append(step)
            seconds.append(elapsed)
            losses.append(math.inf)
            break
        if sampled_fisher and isinstance(opt, KFACOptimizer) and opt.wants_statistics:
            sampled = bernoulli_on(gen, torch.sigmoid(logits.detach()))
            bce(logits, sampled).backward(retain_graph=True)
            opt.zero_grad()
        loss = bce(logits, batch)
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - start
        if not math.isfinite(loss.item()):
            iterations.append(step + 1)
            seconds.append(elapsed)
            losses.append(math.inf)
            break
    eigenvalues = None
    if isinstance(opt, KFACOptimizer):
        opt.remove_hooks()
        eigenvalues = opt.eigenvalues()
    return TrainingCurve(name, dict(hyper), torch.tensor(iterations), torch.tensor(seconds),
                         torch.tensor(losses, dtype=torch.float64), snapshots, eigenvalues)


def tune(name: str, grid: list[dict[str, float]], x: torch.Tensor, **kwargs) -> tuple[TrainingCurve, list[TrainingCurve]]:
    """Run every setting of ``grid`` and return the best curve (lowest final loss; diverged runs lose) and all."""
    curves = [train_autoencoder(name, hyper, x, **kwargs) for hyper in progress(grid, desc=name, leave=False)]
    best = min(curves, key=lambda c: c.final if math.isfinite(c.final) else math.inf)
    return best, curves


@dataclass(frozen=True)
class StepCosines:
    """How well approximate damped natural-gradient steps point along the exact one, at one model.

    ``kfac``, ``ekfac``, ``unpaired``: cosine between ``(F + damping I)^{-1} grad`` (``F`` the exact block-diagonal
    Fisher) and the same step with ``F`` replaced by KFAC, by EKFAC, and by the *unpaired* control: EKFAC's
    diagonal re-estimated with each example's output gradient paired with another example's input (the statistic
    ``E[(U_G^T g)^2 (U_A^T a~)^2]`` without the per-example correlation it exists to capture)."""

    step: int
    damping: float
    kfac: float
    ekfac: float
    unpaired: float


def natural_gradient_cosines(model: nn.Module, x: torch.Tensor, dampings: Sequence[float], *,
                             step: int = 0) -> list[StepCosines]:
    """:class:`StepCosines` of an autoencoder (logits, Bernoulli outputs) on inputs ``x`` in ``[0, 1]``, one per
    damping, in float64.

    Every matrix is exact on ``x``: the block-diagonal Fisher of the binary cross-entropy summed over outputs and
    averaged over examples (:mod:`dynbook_lib.fisher`, ``loss="bernoulli"``), KFAC's factors, EKFAC's diagonal in
    KFAC's fresh eigenbasis, and the gradient of the same loss on ``x``.
    """
    net = copy.deepcopy(model).double()
    x = x.double()
    factors = fisher_factors(net, x, "bernoulli")
    block, kfac = BlockDiagFisher(factors), KFACFisher(factors)
    ekfac = EKFACFisher.from_kfac(kfac).update_diagonal(factors)
    unpaired_factors = replace(factors, layers=[replace(layer, g=layer.g.roll(1, 0)) for layer in factors.layers])
    unpaired = EKFACFisher.from_kfac(kfac).update_diagonal(unpaired_factors)
    loss = nn.functional.binary_cross_entropy_with_logits(net(x), x, reduction="sum") / len(x)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(net.parameters()))])
    out = []
    for damping in dampings:
        exact = block.solve(grad, damping)
        cosines = [float(nn.functional.cosine_similarity(exact, m.solve(grad, damping), dim=0))
                   for m in (kfac, ekfac, unpaired)]
        out.append(StepCosines(step, float(damping), *cosines))
    return out


@dataclass(frozen=True)
class EKFACConfig:
    """Sizes of the chapter (``EKFAC_FAST`` / ``EKFAC_FULL``).

    Structure: an MLP ``mlp_widths`` (ReLU) on mnist1d (``mnist1d_samples`` generated locally), pre-trained
    ``pretrain_steps`` Adam steps, its classification Fisher on ``fisher_examples`` training inputs; then
    ``stale_steps`` more SGD steps for the stale-basis check. Optimizers: a mirrored tanh autoencoder ``ae_widths`` on
    ``ae_data`` (``"digits"`` offline, ``"mnist"`` downloaded), ``ae_steps`` steps of batch ``ae_batch``, eigenbasis
    every ``basis_every`` steps, each optimizer tuned over its grid (learning rates x dampings) at the chapter's
    seed, then its best setting re-run at ``replicates - 1`` more seeds (seed + 1000 r). Natural-gradient steps: an
    EKFAC run on digits (autoencoder ``cosine_widths``, ``cosine_lr``, ``cosine_damping``, batch ``cosine_batch``,
    eigenbasis every ``cosine_basis_every`` steps), its models at
    ``cosine_steps`` compared on ``cosine_examples`` inputs (:func:`natural_gradient_cosines`) at each damping of
    ``step_dampings``.
    """

    mnist1d_samples: int
    mlp_widths: tuple[int, ...]
    pretrain_steps: int
    fisher_examples: int
    stale_steps: int
    ae_data: str
    ae_widths: tuple[int, ...]
    ae_steps: int
    ae_batch: int
    basis_every: int
    sgd_lrs: tuple[float, ...]
    adam_lrs: tuple[float, ...]
    kfac_lrs: tuple[float, ...]
    dampings: tuple[float, ...]
    replicates: int
    cosine_widths: tuple[int, ...]
    cosine_steps: tuple[int, ...]
    cosine_examples: int
    cosine_lr: float
    cosine_damping: float
    step_dampings: tuple[float, ...]
    cosine_batch: int = 100
    cosine_basis_every: int = 10

    def grids(self) -> dict[str, list[dict[str, float]]]:
        """The tuning grid of each optimizer."""
        kron = [dict(lr=lr, damping=d) for lr in self.kfac_lrs for d in self.dampings]
        return {"sgd": [dict(lr=lr) for lr in self.sgd_lrs], "adam": [dict(lr=lr) for lr in self.adam_lrs],
                "kfac": kron, "ekfac": kron}


EKFAC_FAST = EKFACConfig(
    mnist1d_samples=4000, mlp_widths=(40, 32, 32, 10), pretrain_steps=100, fisher_examples=500, stale_steps=50,
    ae_data="digits", ae_widths=(64, 32, 16, 8), ae_steps=400, ae_batch=100, basis_every=10,
    sgd_lrs=(0.1, 0.3), adam_lrs=(1e-2, 3e-2), kfac_lrs=(0.03, 0.1), dampings=(1e-3, 0.1, 1.0), replicates=3,
    cosine_widths=(64, 32, 16, 8), cosine_steps=(100, 200, 400), cosine_examples=64, cosine_lr=0.1,
    cosine_damping=1.0, step_dampings=(1e-3, 1.0),
)
EKFAC_FULL = EKFACConfig(
    mnist1d_samples=10000, mlp_widths=(40, 64, 64, 10), pretrain_steps=1000, fisher_examples=2000, stale_steps=200,
    ae_data="mnist", ae_widths=(784, 1000, 500, 250, 30), ae_steps=10_000, ae_batch=1000, basis_every=20,
    sgd_lrs=(0.01, 0.03, 0.1, 0.3), adam_lrs=(1e-4, 3e-4, 1e-3, 3e-3), kfac_lrs=(0.03, 0.1, 0.3, 1.0),
    dampings=(1e-3, 0.01, 0.1, 1.0), replicates=3,
    cosine_widths=(64, 32, 16, 8), cosine_steps=(100, 200, 400, 800, 1600), cosine_examples=256, cosine_lr=0.1,
    cosine_damping=1.0, step_dampings=(1e-3, 1e-2, 0.1, 1.0),
)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
EKFAC_SMOKE = replace(EKFAC_FULL, mnist1d_samples=400, pretrain_steps=5, fisher_examples=50, stale_steps=5, ae_steps=6,
                     ae_batch=16, basis_every=2, sgd_lrs=(0.1,), adam_lrs=(1e-3,), kfac_lrs=(0.1,), dampings=(1.0,),
                     cosine_steps=(3, 6), cosine_examples=8)
