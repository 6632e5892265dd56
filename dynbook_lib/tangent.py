"""Tangent features ``phi_w(x) = grad_w f_w(x)`` of a torch model, layer by layer, without forming the full Jacobian.

For a parametrised layer ``s = layer(a)`` inside a network with outputs ``f``, the gradient of ``<c, f(x_i)>`` (for a
cotangent ``c`` in output space) with respect to the layer's parameters is obtained from the layer's input ``a_i`` and
the back-propagated output gradient ``g_i = d<c, f(x_i)>/ds``. For a ``Linear`` layer it is the outer product
``g_i a_i~^T`` with ``a~ = [a, 1]`` when the layer has a bias, so the layer is summarised by the pair of *factors*
``(a~_i, g_{i,k})``: every kernel and Kronecker-factored curvature matrix of the library is a product of them
(nngeometry, George 2021, computes its Gram and KFAC matrices the same way). Other parametrised layers (convolutions,
normalisation, embeddings) are summarised by their per-example gradients, computed layer by layer with
``torch.func.vjp``: memory is that of one layer's per-example gradients for one chunk, never the whole Jacobian.

The readable reference is :func:`jacobian` (``torch.func.jacrev`` + ``vmap``), which the tests compare with every fast
path in float64. Parameters are ordered as in ``model.named_parameters()`` (those with ``requires_grad``): that is
the order of every flat parameter vector in the library.

Assumptions: examples do not interact in the forward pass (no batch statistics: put BatchNorm in ``eval()``), and
each parametrised module is called once per forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, jacrev, vjp, vmap


@dataclass
class LayerFactors:
    """Tangent factors of one parametrised module on a set of examples, for ``K`` output cotangents.

    Attributes:
        name: the module's qualified name in the model.
        module: the module.
        params: names of its trainable parameters (in the module), in model order.
        numel: their total number of scalars.
        a: ``Linear`` only: inputs with a trailing 1 when the bias is trained, shape ``(n, d_in [+1])``.
        g: ``Linear`` only: output gradients, shape ``(n, K, d_out)``.
        grads: other layers: per-example gradients, shape ``(n, K, numel)``.
    """

    name: str
    module: nn.Module
    params: list[str]
    numel: int
    a: torch.Tensor | None = None
    g: torch.Tensor | None = None
    grads: torch.Tensor | None = None

    @property
    def factored(self) -> bool:
        """True when the layer is held as ``(a, g)`` factors (a ``Linear`` layer on 2-D inputs)."""
        return self.a is not None

    @property
    def has_bias(self) -> bool:
        return "bias" in self.params

    def per_example_grads(self) -> torch.Tensor:
        """Per-example, per-cotangent gradients of this layer's parameters, shape ``(n, K, numel)``.

        For a factored ``Linear`` layer: the weight part ``g a^T`` (row-major, as ``weight.flatten()``), then ``g``
        for the bias, matching the layout of ``torch.cat([weight.flatten(), bias])``.
        """
        if not self.factored:
            return self.grads
        n, k, d_out = self.g.shape
        a = self.a[:, :-1] if self.has_bias else self.a
        parts = []
        if "weight" in self.params:
            parts.append((self.g.unsqueeze(-1) * a[:, None, None, :]).reshape(n, k, -1))
        if self.has_bias:
            parts.append(self.g)
        return torch.cat(parts, dim=-1)


@dataclass
class TangentFactors:
    """The tangent factors of every parametrised layer of a model (see :func:`tangent_factors`)."""

    layers: list[LayerFactors] = field(default_factory=list)

    @property
    def numel(self) -> int:
        """Number of trainable parameters covered."""
        return sum(layer.numel for layer in self.layers)

    def per_example_grads(self) -> torch.Tensor:
        """All per-example gradients, shape ``(n, K, P)`` in model parameter order (the full Jacobian: tiny nets)."""
        return torch.cat([layer.per_example_grads() for layer in self.layers], dim=-1)

    def layer_slices(self) -> list[slice]:
        """Slice of each layer in a flat parameter vector."""
        out, start = [], 0
        for layer in self.layers:
            out.append(slice(start, start + layer.numel))
            start += layer.numel
        return out


def trainable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters with ``requires_grad``, detached, by qualified name, in model order."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def parametrised_modules(model: nn.Module) -> list[tuple[str, nn.Module, list[str]]]:
    """``(name, module, trainable parameter names)`` for each module that owns trainable parameters, in model order.

    Raises:
        ValueError: if the modules' parameters are not contiguous in ``model.named_parameters()`` order (then a
            flat parameter vector could not be split by layer).
    """
    owners = []
    for name, module in model.named_modules():
        own = [p_name for p_name, p in module.named_parameters(recurse=False) if p.requires_grad]
        if own:
            owners.append((name, module, own))
    flat_order = list(trainable_parameters(model))
    per_layer = [f"{name}.{p}" if name else p for name, _, own in owners for p in own]
    if per_layer != flat_order:
        raise ValueError("tangent factors need each module's parameters contiguous in model.named_parameters() order")
    return owners


def _layer_vjp_grads(module: nn.Module, params: list[str], a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-example parameter gradients of a generic layer: ``vjp`` of ``module(a_i)`` against each ``g_{i,k}``."""
    own = {p: getattr(module, p).detach() for p in params}

    def grads_one(a_i: torch.Tensor, g_i: torch.Tensor) -> torch.Tensor:
        def out(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(module, p, (a_i.unsqueeze(0),)).squeeze(0)

        _, pullback = vjp(out, own)
        grads = vmap(pullback)(g_i)[0]
        return torch.cat([grads[p].reshape(g_i.shape[0], -1) for p in params], dim=-1)

    return vmap(grads_one)(a, g)


def tangent_factors(model: nn.Module, x: torch.Tensor, cotangents: torch.Tensor | None = None) -> TangentFactors:
    """Layer-wise tangent factors of ``model`` on the examples ``x``.

    Args:
        model: maps ``(n, ...)`` inputs to ``(n, O)`` outputs; examples must not interact (BatchNorm in eval mode).
        x: inputs, shape ``(n, ...)``.
        cotangents: output-space directions ``c_{i,k}``, shape ``(n, K, O)``; default the identity (``K = O``), which
            gives the Jacobian ``d f_k(x_i) / dw``. A Fisher matrix uses a square root of the output-space Fisher here.

    Returns:
        :class:`TangentFactors`; layer ``l`` holds for each example ``i`` and cotangent ``k`` the gradient of
        ``<c_{i,k}, f(x_i)>`` with respect to the layer's parameters, in factored form for ``Linear`` layers.

    Example:
        >>> net = nn.Linear(3, 2).double()
        >>> tf = tangent_factors(net, torch.ones(4, 3, dtype=torch.float64))
        >>> tf.per_example_grads().shape  # (n, K = O, P)
        torch.Size([4, 2, 8])
    """
    modules = parametrised_modules(model)
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def save(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name in captured:
                raise ValueError(f"module {name!r} is called more than once per forward pass (shared weights)")
            captured[name] = (inputs[0].detach(), output)

        return save

    handles = [module.register_forward_hook(hook(name)) for name, module, _ in modules]
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    if out.ndim != 2:
        raise ValueError(f"the model must return (n, O) outputs, got shape {tuple(out.shape)}")
    n, n_out = out.shape
    if cotangents is None:
        cotangents = torch.eye(n_out, dtype=out.dtype, device=out.device).expand(n, n_out, n_out)
    if cotangents.shape[0] != n or cotangents.shape[2] != n_out:
        raise ValueError(f"cotangents must have shape (n={n}, K, O={n_out}), got {tuple(cotangents.shape)}")
    outputs = [captured[name][1] for name, _, _ in modules]
    # One backward pass per cotangent k, to every layer output at once.
    per_k = [
        torch.autograd.grad(out, outputs, grad_outputs=cotangents[:, k], retain_graph=k < cotangents.shape[1] - 1)
        for k in range(cotangents.shape[1])
    ]
    layers = []
    for j, (name, module, params) in enumerate(modules):
        a = captured[name][0]
        g = torch.stack([grads[j] for grads in per_k], dim=1)  # (n, K, *out_shape)
        numel = sum(getattr(module, p).numel() for p in params)
        if isinstance(module, nn.Linear) and a.ndim == 2 and "weight" in params:
            if "bias" in params:
                a = torch.cat([a, torch.ones_like(a[:, :1])], dim=1)
            layers.append(LayerFactors(name, module, params, numel, a=a, g=g))
        else:
            layers.append(LayerFactors(name, module, params, numel, grads=_layer_vjp_grads(module, params, a, g)))
    return TangentFactors(layers)


def jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The full Jacobian ``J[i, o, p] = d f_o(x_i) / d w_p`` by ``torch.func.jacrev`` + ``vmap`` (reference path).

    Args:
        model: maps ``(n, ...)`` to ``(n, O)``; evaluated example by example (batch of one).
        x: inputs, shape ``(n, ...)``.

    Returns:
        shape ``(n, O, P)``, parameters in ``model.named_parameters()`` order (those with ``requires_grad``).

    Example:
        >>> net = nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
        >>> jacobian(net, x).tolist()  # d(w . x)/dw = x
        [[[1.0, 2.0]]]
    """
    params = trainable_parameters(model)
    buffers = {name: b for name, b in model.named_buffers()}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}

    def f(p: dict[str, torch.Tensor], x_i: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, frozen, buffers), (x_i.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    n = x.shape[0]
    n_out = next(iter(jac.values())).shape[1]
    return torch.cat([jac[name].reshape(n, n_out, -1) for name in params], dim=-1)
