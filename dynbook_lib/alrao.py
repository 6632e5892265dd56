"""Alrao, "All learning rates at once" (Blier, Wolinski & Ollivier 2019): random per-feature learning rates.

Any network is split into a *body* (everything up to the last layer) and a *head* (the output layer). Alrao

* gives every feature of the body its own learning rate, drawn log-uniformly in ``[eta_min, eta_max]``
  (:func:`feature_learning_rates`): one per output unit of a ``Linear`` layer (its weight row and its bias share it),
  per output channel of a convolution, per embedding dimension, per row of the input and hidden weights of an
  ``LSTM`` / ``GRU`` / ``RNN`` (the matching biases reuse them); every other parameter (batch-norm scales and shifts,
  anything unknown) gets an independent rate per scalar;
* replaces the head by ``K`` copies with rates ``eta_j = eta_min (eta_max / eta_min)^(j / (K - 1))``, whose predictive
  distributions are averaged with the weights of a *switch* (van Erven, Grünwald & de Rooij 2012), a Bayesian model
  average that can move its mass to another head when that one starts predicting better (:class:`Switch`);
* trains by plain SGD with these rates (:class:`PerParameterSGD`): the body on the negative log-likelihood of the
  mixture, each head on its own negative log-likelihood with the body's features detached (:func:`alrao_step`).

:class:`Alrao` wraps any ``body`` and ``head`` modules.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from dynbook_lib.core.progress import progress
from dynbook_lib.core.seeding import make_generator
from dynbook_lib.models import minibatches, seeded


def log_uniform(shape: tuple[int, ...], eta_min: float, eta_max: float, generator: torch.Generator,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``exp(U log(eta_max / eta_min) + log eta_min)`` with ``U ~ Uniform(0, 1)``, of the given shape."""
    if not 0 < eta_min <= eta_max:
        raise ValueError(f"need 0 < eta_min <= eta_max, got eta_min={eta_min}, eta_max={eta_max}")
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.exp(u * math.log(eta_max / eta_min) + math.log(eta_min)).to(dtype)


def _rows(param: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """Rates ``(rows,)`` broadcast over the remaining dimensions of ``param`` (one rate per leading index)."""
    return rates.reshape(-1, *[1] * (param.ndim - 1))


def feature_learning_rates(module: nn.Module, eta_min: float, eta_max: float, *,
                           generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One learning-rate tensor per parameter of ``module`` (by name), broadcastable to the parameter.

    Features: ``Linear`` and (non-transposed) convolutions, one rate per output unit or channel, shared by the weight
    and the bias; ``Embedding``, one per embedding dimension; ``LSTM`` / ``GRU`` / ``RNN``, one per row of each
    ``weight_ih`` / ``weight_hh`` / ``weight_hr`` matrix, ``bias_ih`` and ``bias_hh`` reusing the rates of the matching
    weights; every other parameter, one independent rate per scalar.

    Example:
        >>> rates = feature_learning_rates(nn.Linear(3, 2), 1e-3, 1.0, generator=torch.Generator().manual_seed(0))
        >>> tuple(rates["weight"].shape), tuple(rates["bias"].shape)
        ((2, 1), (2,))
        >>> bool(torch.equal(rates["weight"].flatten(), rates["bias"]))
        True
    """
    rates: dict[str, torch.Tensor] = {}
    for prefix, sub in module.named_modules():
        own = dict(sub.named_parameters(recurse=False))
        if not own:
            continue
        name = (prefix + ".") if prefix else ""
        if isinstance(sub, (nn.Linear, nn.modules.conv._ConvNd)) and not getattr(sub, "transposed", False):
            shared = log_uniform((sub.weight.shape[0],), eta_min, eta_max, generator, sub.weight.dtype)
            rates[name + "weight"] = _rows(sub.weight, shared)
            if sub.bias is not None:
                rates[name + "bias"] = shared.clone()
        elif isinstance(sub, nn.Embedding):
            rates[name + "weight"] = log_uniform((1, sub.weight.shape[1]), eta_min, eta_max, generator,
                                                 sub.weight.dtype)
        elif isinstance(sub, nn.RNNBase):
            for pname, p in own.items():
                if pname.startswith("weight_"):
                    row_rates = log_uniform((p.shape[0],), eta_min, eta_max, generator, p.dtype)
                    rates[name + pname] = _rows(p, row_rates)
            for pname, p in own.items():
                if pname.startswith("bias_"):  # bias_ih_l0 reuses weight_ih_l0's rows
                    rates[name + pname] = rates[name + "weight_" + pname[len("bias_"):]].flatten().clone()
        else:
            for pname, p in own.items():
                rates[name + pname] = log_uniform(tuple(p.shape), eta_min, eta_max, generator, p.dtype)
    return rates


def head_learning_rates(n_heads: int, eta_min: float, eta_max: float) -> torch.Tensor:
    """``eta_j = exp(log eta_min + j / (K - 1) log(eta_max / eta_min))``, ``j = 0 .. K - 1`` (float64).

    Example:
        >>> [round(r, 12) for r in head_learning_rates(3, 1e-2, 1.0).tolist()]
        [0.01, 0.1, 1.0]
    """
    if n_heads < 1:
        raise ValueError(f"need at least one head, got {n_heads}")
    if n_heads == 1:
        return torch.tensor([math.sqrt(eta_min * eta_max)], dtype=torch.float64)
    j = torch.arange(n_heads, dtype=torch.float64)
    rates = torch.exp(math.log(eta_min) + j / (n_heads - 1) * math.log(eta_max / eta_min))
    rates[0], rates[-1] = eta_min, eta_max  # exact ends
    return rates


class Switch(nn.Module):
    """The switch distribution over ``K`` predictors (van Erven, Grünwald & de Rooij 2012), in log space.

    State ``log w`` of shape ``(2, K)``: row 0 "keep the current predictor", row 1 "switched already"; initialised to
    ``[log theta; log(1 - theta)] - log K``. After a batch with mean negative log-likelihoods ``L_j``:

    ``log w += -L``; ``pool = logsumexp(log w[0]) + log pi_t``; ``log w[0] += log(1 - pi_t)``;
    ``log w = logaddexp(log w, [log theta; log(1 - theta)] + pool - log K)``; normalise; with ``pi_t = 1 / (t + 1)``
    and ``t = 1, 2, ...`` the update count. The posterior of predictor ``j`` is ``a_j = sum of column j``.
    """

    def __init__(self, n_models: int, theta: float = 0.9999) -> None:
        super().__init__()
        if n_models < 1 or not 0 < theta < 1:
            raise ValueError(f"need n_models >= 1 and 0 < theta < 1, got {n_models}, {theta}")
        self.n_models, self.theta, self.t = n_models, theta, 1
        prior = torch.tensor([[math.log(theta)], [math.log1p(-theta)]], dtype=torch.float64)
        self.register_buffer("prior", prior)
        self.register_buffer("log_w", prior.expand(2, n_models) - math.log(n_models))

    def log_posterior(self) -> torch.Tensor:
        """``log a_j``, shape ``(K,)``."""
        return torch.logsumexp(self.log_w, dim=0)

    @torch.no_grad()
    def update(self, losses: torch.Tensor) -> None:
        """One step with the per-predictor mean negative log-likelihoods ``losses`` ``(K,)``.

        A predictor whose loss is not finite (a head that diverged) gets weight zero instead of turning every weight
        into NaN; a step where no loss is finite is skipped.
        """
        losses = losses.detach().to(self.log_w)
        finite = torch.isfinite(losses)
        if not bool(finite.any()):
            return
        pi = 1.0 / (self.t + 1)
        log_w = self.log_w - torch.where(finite, losses, torch.full_like(losses, math.inf))
        pool = torch.logsumexp(log_w[0], dim=0) + math.log(pi)
        log_w[0] += math.log1p(-pi)
        log_w = torch.logaddexp(log_w, self.prior + pool - math.log(self.n_models))
        self.log_w = log_w - torch.logsumexp(log_w.flatten(), dim=0)
        self.t += 1


def _reset(module: nn.Module) -> None:
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()


class Alrao(nn.Module):
    """A ``body`` followed by ``n_heads`` copies of ``head`` averaged by a :class:`Switch`.

    Args:
        body: any module mapping inputs to features.
        head: the output layer (features to class logits), a module without buffers; each copy is re-initialised
            from ``seed``. The copies are held as stacked parameters (``K`` first) and evaluated at once with
            ``torch.func.vmap``, so ``K`` heads cost about one batched head, not ``K`` modules.
        n_heads: ``K``.
        eta_min, eta_max: the range of the learning rates.
        seed: seed of the per-feature rates and of the heads' initialisations.
        theta: the switch's prior probability that a sequence of heads can switch (again); ``1 - theta`` is the
            prior probability of keeping its head for good.

    ``forward`` returns the log-probabilities of the mixture, ``log sum_j a_j p_j(y | x)``, shape ``(n, C)``.
    """

    def __init__(self, body: nn.Module, head: nn.Module, *, n_heads: int = 10, eta_min: float = 1e-5,
                 eta_max: float = 10.0, seed: int = 0, theta: float = 0.9999) -> None:
        super().__init__()
        if any(True for _ in head.buffers()):
            raise ValueError("the head must have no buffers (use batch norm in the body, a Linear head)")
        self.body = body
        copies = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(n_heads):
                h = copy.deepcopy(head)
                _reset(h)
                copies.append(h)
        stacked, _ = torch.func.stack_module_state(copies)
        self.head_names = list(stacked)
        self.head_params = nn.ParameterList([nn.Parameter(stacked[n].detach().clone()) for n in self.head_names])
        self._template = [copy.deepcopy(head).to("meta")]  # a list: not a submodule, never trained or moved
        self.switch = Switch(n_heads, theta)
        self.eta_min, self.eta_max = eta_min, eta_max
        self.body_rates = feature_learning_rates(body, eta_min, eta_max, generator=make_generator(seed))
        self.register_buffer("head_rates", head_learning_rates(n_heads, eta_min, eta_max))

    @property
    def n_heads(self) -> int:
        return len(self.head_rates)

    def head(self, j: int) -> dict[str, torch.Tensor]:
        """The parameters of head ``j`` (views into the stacked ones), by name."""
        return {n: p[j] for n, p in zip(self.head_names, self.head_params)}

    def head_log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """``log p_j(. | x)`` of every head, shape ``(K, n, C)``."""
        template = self._template[0]
        if type(template) is nn.Linear:  # the common case, written out: one batched matrix product
            params = dict(zip(self.head_names, self.head_params))
            logits = torch.einsum("nf,kcf->knc", features, params["weight"])
            if "bias" in params:
                logits = logits + params["bias"][:, None, :]
            return torch.log_softmax(logits, dim=-1)

        def one(*params: torch.Tensor) -> torch.Tensor:
            logits = torch.func.functional_call(template, dict(zip(self.head_names, params)), (features,))
            return torch.log_softmax(logits, dim=-1)

        return torch.func.vmap(one)(*self.head_params)

    def mixture(self, head_log_probs: torch.Tensor) -> torch.Tensor:
        """``log sum_j a_j p_j``, shape ``(n, C)``, from the heads' log-probabilities."""
        log_a = self.switch.log_posterior().to(head_log_probs)
        return torch.logsumexp(head_log_probs + log_a[:, None, None], dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixture(self.head_log_probs(self.body(x)))

    def rates(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Every trainable parameter with its learning-rate tensor: the body's per-feature rates, then the stacked
        heads' parameters with rate ``eta_j`` on slice ``j``."""
        pairs = [(p, self.body_rates[n].to(p)) for n, p in self.body.named_parameters() if p.requires_grad]
        for p in self.head_params:
            pairs.append((p, self.head_rates.to(p).reshape(-1, *[1] * (p.ndim - 1))))
        return pairs


class PerParameterSGD(torch.optim.Optimizer):
    """Plain SGD with a learning-rate tensor per parameter: ``p <- p - lr_p * grad`` (``lr_p`` broadcastable to ``p``).

    Example:
        >>> w = nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> opt = PerParameterSGD([(w, torch.tensor([0.1, 1.0]))])
        >>> w.grad = torch.tensor([1.0, 1.0]); opt.step(); w.data.tolist()
        [0.8999999761581421, 0.0]
    """

    def __init__(self, params_and_rates: Iterable[tuple[nn.Parameter, torch.Tensor]]) -> None:
        pairs = list(params_and_rates)
        super().__init__([p for p, _ in pairs], {})
        for p, rate in pairs:
            try:
                fits = torch.broadcast_shapes(rate.shape, p.shape) == p.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(f"a rate of shape {tuple(rate.shape)} does not broadcast to {tuple(p.shape)}")
            self.state[p]["rate"] = rate.detach().to(p)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch's signature)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:  # p <- p - rate * grad for all parameters in one fused call
                torch._foreach_addcmul_(params, [self.state[p]["rate"] for p in params], [p.grad for p in params],
                                        value=-1)
        return None


def alrao_step(model: Alrao, optimizer: PerParameterSGD, x: torch.Tensor,
               y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """One Alrao step: the body descends the mixture's mean negative log-likelihood, each head its own (the features
    held fixed), then the switch is updated with the heads' losses. Returns (mixture loss, heads' losses ``(K,)``).

    One forward pass of the heads serves both gradients: the head parameters' gradient of the heads' own losses does
    not depend on whether the features are detached, and the body receives only the mixture's gradient.
    """
    features = model.body(x)
    head_log_probs = model.head_log_probs(features)
    mixture_loss = nn.functional.nll_loss(model.mixture(head_log_probs), y)
    head_losses = -head_log_probs[:, torch.arange(len(y), device=y.device), y].mean(1)
    optimizer.zero_grad()
    (feature_grad,) = torch.autograd.grad(mixture_loss, features, retain_graph=True)
    head_grads = torch.autograd.grad(head_losses.sum(), list(model.head_params), retain_graph=True)
    features.backward(feature_grad)
    for p, g in zip(model.head_params, head_grads):
        p.grad = g
    optimizer.step()
    model.switch.update(head_losses.detach())
    return float(mixture_loss.detach()), head_losses.detach()


# ---------------------------------------------------------------- the chapter's race: Alrao vs SGD over a grid vs Adam


@dataclass
class Curves:
    """A training run: ``steps`` at which it was evaluated, ``train_loss`` (mean over the steps since the previous
    record), ``test_nll`` and ``test_accuracy``; for Alrao the switch ``posterior`` after every step (``(T, K)``, step
    ``t`` at row ``t``, row 0 the prior); ``diverged`` when a loss became non-finite (training stops there)."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_nll: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    posterior: list[list[float]] = field(default_factory=list)
    diverged: bool = False

    @property
    def final_nll(self) -> float:
        return self.test_nll[-1] if not self.diverged else float("inf")

    def add_record(self, t: int, log_probs: torch.Tensor, y_test: torch.Tensor, running: list[float]) -> None:
        """Record step ``t``: test NLL and accuracy of ``log_probs`` on ``y_test``, the mean of the ``running`` train
        losses since the last record (emptied)."""
        self.steps.append(t)
        self.test_nll.append(float(nn.functional.nll_loss(log_probs, y_test)))
        self.test_accuracy.append(float((log_probs.argmax(1) == y_test).double().mean()))
        self.train_loss.append(sum(running) / len(running) if running else float("nan"))
        running.clear()

    def diverge_at(self, t: int) -> None:
        """Mark the run diverged at step ``t`` (a non-finite loss): a record of NaNs, and training stops there."""
        self.diverged = True
        self.steps.append(t)
        self.train_loss.append(float("nan"))
        self.test_nll.append(float("nan"))
        self.test_accuracy.append(float("nan"))


def mlp_body(widths: tuple[int, ...], *, seed: int, batchnorm: bool = True) -> nn.Sequential:
    """``Linear - BatchNorm - ReLU`` blocks through ``widths`` (the features of the last width feed the heads)."""

    def build() -> nn.Sequential:
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b)] + ([nn.BatchNorm1d(b)] if batchnorm else []) + [nn.ReLU()]
        return nn.Sequential(*layers)

    return seeded(build, seed)


def fit(model: nn.Module, step: Callable[[torch.Tensor, torch.Tensor], float], data: dict[str, torch.Tensor], *,
        epochs: int, batch_size: int, seed: int, log_probs: Callable[[torch.Tensor], torch.Tensor],
        records_per_epoch: int = 4, on_step: Callable[[Curves], None] | None = None,
        desc: str | None = None) -> Curves:
    """Minibatch training (``step(x, y)`` returns the batch loss) with test NLL and accuracy recorded
    ``records_per_epoch`` times per epoch; ``on_step(curves)`` is called before the first step and after every step;
    stops at the first non-finite loss."""
    n = len(data["y_train"])
    steps_per_epoch = n // batch_size
    total = epochs * steps_per_epoch
    every = max(1, steps_per_epoch // records_per_epoch)
    batches = minibatches(n, batch_size, make_generator(seed))
    curves, running = Curves(), []

    def record(t: int) -> None:
        model.eval()
        with torch.no_grad():
            curves.add_record(t, log_probs(data["x_test"]), data["y_test"], running)
        model.train()

    record(0)
    if on_step is not None:
        on_step(curves)
    for t in progress(range(1, total + 1), desc=desc, leave=False):
        idx = next(batches)
        loss = step(data["x_train"][idx], data["y_train"][idx])
        if on_step is not None:
            on_step(curves)
        if not math.isfinite(loss):
            curves.diverge_at(t)
            break
        running.append(loss)
        if t % every == 0 or t == total:
            record(t)
    return curves


def train_baseline(body: nn.Module, head: nn.Module, data: dict[str, torch.Tensor], *, optimizer: str, lr: float,
                   epochs: int, batch_size: int, seed: int, desc: str | None = None) -> Curves:
    """Train ``body`` + ``head`` with ``"sgd"`` (plain) or ``"adam"`` at step ``lr`` on the cross-entropy."""
    net = nn.Sequential(body, head)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    elif optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected sgd or adam")

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return fit(net, step, data, epochs=epochs, batch_size=batch_size, seed=seed,
               log_probs=lambda x: torch.log_softmax(net(x), -1), desc=desc)


def train_sgd_grid(nets: Sequence[nn.Module], lrs: Sequence[float],
                   data: dict[str, torch.Tensor] | Sequence[dict[str, torch.Tensor]], *, epochs: int,
                   batch_size: int, seeds: int | Sequence[int], records_per_epoch: int = 4,
                   eval_chunk: int = 2000, desc: str | None = None) -> list[Curves]:
    """Plain SGD on many networks of one architecture at once, e.g. a learning-rate grid over several seeds.

    Network ``m`` is trained at rate ``lrs[m]`` on ``data[m]`` (or on one shared ``data`` dict) with the minibatch
    order of ``seeds[m]`` (or one shared seed), on the cross-entropy, exactly as
    ``train_baseline(body, head, data[m], optimizer="sgd", lr=lrs[m], seed=seeds[m], ...)`` would train it one at a
    time, up to float rounding (tested): the networks' parameters and buffers (batch-norm statistics included) are
    stacked and one vectorised step (``torch.func.vmap``) updates them all, which on a CPU takes about half the time
    of the one-at-a-time loop for a few dozen small networks. A network whose loss turns non-finite is marked
    diverged and frozen; the others go on. The trained weights are written back into ``nets``.

    Example:
        >>> nets = [nn.Sequential(nn.Linear(4, 3)) for _ in range(2)]
        >>> data = {"x_train": torch.randn(32, 4), "y_train": torch.randint(0, 3, (32,)),
        ...         "x_test": torch.randn(8, 4), "y_test": torch.randint(0, 3, (8,))}
        >>> [len(c.test_nll) for c in train_sgd_grid(nets, [0.1, 1.0], data, epochs=1, batch_size=8, seeds=0)]
        [5, 5]
    """
    count = len(nets)
    datas = [data] * count if isinstance(data, dict) else list(data)
    orders = [seeds] * count if isinstance(seeds, int) else list(seeds)
    if count == 0 or not len(lrs) == len(datas) == len(orders) == count:
        raise ValueError(f"need one rate, data set and seed per network (or one shared data set and seed), got "
                         f"{count} networks, {len(lrs)} rates, {len(datas)} data sets, {len(orders)} seeds")
    n = len(datas[0]["y_train"])
    if any(len(d["y_train"]) != n for d in datas):
        raise ValueError("every data set needs the same number of training examples")
    params, buffers = stack_module_state(list(nets))
    template = copy.deepcopy(nets[0]).to("meta")

    def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(template, (p, b), (x,)), y)

    step = vmap(grad_and_value(loss))
    first = next(iter(params.values()))
    rates = torch.tensor([float(r) for r in lrs], dtype=first.dtype, device=first.device)
    active = torch.ones(count, dtype=torch.bool, device=first.device)
    steps_per_epoch = n // batch_size
    total, every = epochs * steps_per_epoch, max(1, steps_per_epoch // records_per_epoch)
    streams = [minibatches(n, batch_size, make_generator(s)) for s in orders]
    curves = [Curves() for _ in range(count)]
    running: list[list[float]] = [[] for _ in range(count)]

    @torch.no_grad()
    def record(t: int) -> None:
        template.eval()
        for m in active.nonzero().flatten().tolist():
            own = ({k: v[m] for k, v in params.items()}, {k: v[m] for k, v in buffers.items()})
            x_test, y_test = datas[m]["x_test"], datas[m]["y_test"]
            lp = torch.cat([torch.log_softmax(functional_call(template, own, (x_test[i:i + eval_chunk],)), -1)
                            for i in range(0, len(y_test), eval_chunk)])
            curves[m].add_record(t, lp, y_test, running[m])
        template.train()

    record(0)
    for t in progress(range(1, total + 1), desc=desc, leave=False):
        idx = [next(s) for s in streams]
        x = torch.stack([d["x_train"][i] for d, i in zip(datas, idx)])
        y = torch.stack([d["y_train"][i] for d, i in zip(datas, idx)])
        grads, losses = step(params, buffers, x, y)
        finite = torch.isfinite(losses.detach())
        for m in (active & ~finite).nonzero().flatten().tolist():  # diverged now: record it as fit does, then freeze
            curves[m].diverge_at(t)
        active &= finite
        frozen = ~active
        with torch.no_grad():
            for name, p in params.items():
                g = grads[name]
                if bool(frozen.any()):
                    g[frozen] = 0.0  # a frozen network's gradient may be NaN: drop it before scaling
                p.sub_(g.mul_(rates.view(-1, *[1] * (p.dim() - 1))))
        for m, (value, alive) in enumerate(zip(losses.tolist(), active.tolist())):
            if alive:
                running[m].append(value)
        if not bool(active.any()):
            break
        if t % every == 0 or t == total:
            record(t)
    with torch.no_grad():
        for m, net in enumerate(nets):
            for name, p in net.named_parameters():
                p.copy_(params[name][m])
            for name, b in net.named_buffers():
                b.copy_(buffers[name][m])
    return curves


def train_alrao(model: Alrao, data: dict[str, torch.Tensor], *, epochs: int, batch_size: int, seed: int,
                desc: str | None = None) -> Curves:
    """Train an :class:`Alrao` model with :class:`PerParameterSGD`; the switch posterior is recorded too."""
    opt = PerParameterSGD(model.rates())

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        return alrao_step(model, opt, x, y)[0]

    def posterior(curves: Curves) -> None:
        curves.posterior.append(model.switch.log_posterior().exp().tolist())

    return fit(model, step, data, epochs=epochs, batch_size=batch_size, seed=seed, log_probs=model,
               on_step=posterior, desc=desc)


@dataclass(frozen=True)
class AlraoConfig:
    """Sizes of the chapter (``ALRAO_FAST`` / ``ALRAO_FULL``): ``data`` (``"mnist1d"`` or ``"cifar10"``), the body
    (``"mlp"`` on ``widths`` with batch norm, or ``"vgg"`` of width ``cnn_width``), ``epochs``, ``batch_size``, the SGD
    grid ``sgd_lrs``, Adam's ``adam_lr``, Alrao's ``eta_min``, ``eta_max`` and ``n_heads``; ``n_samples`` of mnist1d,
    ``n_train`` CIFAR-10 training images; ``race_seeds``, the number of seeds (data, initialisation, minibatch
    order) over which Alrao and the SGD grid are raced and averaged."""

    data: str
    body: str
    epochs: int
    batch_size: int
    sgd_lrs: tuple[float, ...]
    adam_lr: float
    eta_min: float
    eta_max: float
    n_heads: int
    widths: tuple[int, ...] = (40, 256, 256)
    cnn_width: float = 1.0
    n_samples: int = 5000
    n_train: int = 40_000
    n_classes: int = 10
    race_seeds: int = 3

    def __post_init__(self) -> None:
        if self.race_seeds < 1:
            raise ValueError(f"race_seeds must be at least 1, got {self.race_seeds}")


def half_decades(low: float, high: float) -> tuple[float, ...]:
    """Learning rates ``10^(k/2)`` from ``low`` to ``high`` (both powers of ten), a half-decade grid.

    Example:
        >>> half_decades(1e-2, 1.0)
        (0.01, 0.0316, 0.1, 0.316, 1.0)
    """
    a, b = round(2 * math.log10(low)), round(2 * math.log10(high))
    return tuple(float(f"{10 ** (k / 2):.3g}") for k in range(a, b + 1))


ALRAO_FAST = AlraoConfig(data="mnist1d", body="mlp", epochs=15, batch_size=32, sgd_lrs=half_decades(1e-4, 10.0),
                         adam_lr=1e-3, eta_min=1e-5, eta_max=10.0, n_heads=10)
# The full profile keeps a decade grid (plus eta_max, for the divergence control): eleven CIFAR-10 runs of 30 epochs
# would not fit its one-GPU budget; SGD at the top head's rate is one more run.
ALRAO_FULL = AlraoConfig(data="cifar10", body="vgg", epochs=30, batch_size=32,
                         sgd_lrs=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0), adam_lr=1e-3, eta_min=1e-5, eta_max=10.0,
                         n_heads=10)
# The full configuration at a tiny length (profile "smoke"): the same models, data pipeline and code path, so
# that a CPU run finds what would crash or leak on a GPU before one is spent on it.
ALRAO_SMOKE = replace(ALRAO_FULL, epochs=1, n_train=64)


def diverged(curves: Curves) -> bool:
    """Divergence of a run: a non-finite loss, or a final test NLL above the one at initialisation.

    Example:
        >>> diverged(Curves(test_nll=[2.3, 2.4])), diverged(Curves(test_nll=[2.3, 0.9]))
        (True, False)
    """
    return curves.diverged or not math.isfinite(curves.test_nll[-1]) or curves.test_nll[-1] > curves.test_nll[0]


def vgg_body(*, seed: int, width: float = 1.0) -> nn.Sequential:
    """VGG-11's convolutions with batch normalisation for 32 x 32 images, flattened to ``512 width`` features (the
    head is a ``Linear`` on them)."""
    from dynbook_lib.lazy_cnn import vgg11_features

    return seeded(lambda: nn.Sequential(*vgg11_features(width=width, batchnorm=True)[0], nn.Flatten()), seed)


def build_networks(cfg: AlraoConfig, *, seed: int) -> tuple[nn.Module, nn.Module]:
    """The chapter's body and head, initialised from ``seed``: a batch-normalised MLP on ``cfg.widths`` or the VGG
    body, and a ``Linear`` head to ``cfg.n_classes``."""
    if cfg.body == "mlp":
        body, features = mlp_body(cfg.widths, seed=seed), cfg.widths[-1]
    elif cfg.body == "vgg":
        body, features = vgg_body(seed=seed, width=cfg.cnn_width), max(1, int(512 * cfg.cnn_width))
    else:
        raise ValueError(f"unknown body {cfg.body!r}; expected mlp or vgg")
    head = seeded(lambda: nn.Linear(features, cfg.n_classes), seed + 1)
    return body, head


def load_data(cfg: AlraoConfig, *, seed: int, data_root: str | None = None,
              download: bool = True) -> dict[str, torch.Tensor]:
    """mnist1d generated locally (``cfg.n_samples``, 80/20 split, float32), or CIFAR-10's first ``cfg.n_train``
    training images (the paper's 40 000 / 10 000 split keeps the rest for validation) and its test set."""
    if cfg.data == "mnist1d":
        from dynbook_lib.data.offline import mnist1d_tensors

        return mnist1d_tensors(cfg.n_samples, seed=seed, dtype=torch.float32)
    if cfg.data == "cifar10":
        from dynbook_lib.data.downloads import cifar10_tensors, data_dir

        d = cifar10_tensors(data_root or data_dir("cifar10"), download=download)
        return {"x_train": d["x_train"][: cfg.n_train], "y_train": d["y_train"][: cfg.n_train],
                "x_test": d["x_test"], "y_test": d["y_test"]}
    raise ValueError(f"unknown data {cfg.data!r}; expected mnist1d or cifar10")
