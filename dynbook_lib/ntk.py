"""The empirical neural tangent kernel (Jacot, Gabriel & Hongler 2018) of a multi-output torch model.

``Theta[i, o, j, o'] = <d f_o(x_i)/dw, d f_o'(x'_j)/dw>`` summed over all trainable parameters. Two paths:

* :func:`empirical_ntk` (fast): from the layer-wise tangent factors of :mod:`dynbook_lib.tangent`. A ``Linear`` layer
  contributes ``(a_i . a'_j) (g_{i,o} . g'_{j,o'})`` (``a`` its input with a 1 for the bias, ``g`` the output
  gradient), so its Jacobian is never formed; other layers contribute the product of their per-example gradients.
  Inputs are processed in chunks, so ``n = 2000`` examples with 10 outputs fit in a few GiB.
* :func:`empirical_ntk_reference` (readable): the full Jacobian by ``torch.func.jacrev`` + ``vmap``, then ``J J'^T``.

Layouts (``layout=``): ``"full"`` gives shape ``(n1, O, n2, O)`` (``.reshape(n1 * O, n2 * O)`` is the
``nO x nO`` Gram matrix, example-major); ``"blocks"`` gives the per-output-pair blocks, shape ``(O, O, n1, n2)``;
``"trace"`` gives ``sum_o Theta[:, o, :, o]``, shape ``(n1, n2)`` (the kernel used for alignment measures).

``centered=True`` returns the kernel of the centred tangent features ``phi(x_i) - mean_i phi(x_i)`` (each input set
centred by its own mean), i.e. ``C1 Theta C2`` with ``C = I - 11^T / n`` acting on the example indices.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dynbook_lib.tangent import TangentFactors, jacobian, tangent_factors

Layout = Literal["full", "blocks", "trace"]
_LAYOUTS = ("full", "blocks", "trace")


def _check_layout(layout: str) -> None:
    if layout not in _LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(_LAYOUTS)}")


def _gram_from_factors(f1: TangentFactors, f2: TangentFactors, trace: bool) -> torch.Tensor:
    """``(n1, O, n2, O)`` Gram of two sets of factors (or ``(n1, n2)`` summed over matching outputs if ``trace``)."""
    total = None
    for l1, l2 in zip(f1.layers, f2.layers):
        if l1.factored:
            aa = l1.a @ l2.a.T  # (n1, n2)
            if trace:
                term = aa * torch.einsum("iod,jod->ij", l1.g, l2.g)
            else:
                n1, k, d = l1.g.shape
                gg = (l1.g.reshape(n1 * k, d) @ l2.g.reshape(-1, d).T).reshape(n1, k, -1, k)
                term = gg * aa[:, None, :, None]
        else:
            if trace:
                term = torch.einsum("iop,jop->ij", l1.grads, l2.grads)
            else:
                n1, k, p = l1.grads.shape
                term = (l1.grads.reshape(n1 * k, p) @ l2.grads.reshape(-1, p).T).reshape(n1, k, -1, k)
        total = term if total is None else total + term
    return total


def _chunks(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return list(torch.split(x, size)) if x.shape[0] else [x]


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    layout: Layout = "full",
    centered: bool = False,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Empirical NTK Gram matrix between ``x1`` and ``x2`` (default ``x1``) by the layer-wise fast path.

    Args:
        model: maps ``(n, ...)`` to ``(n, O)``; examples must not interact in the forward pass.
        x1: inputs, shape ``(n1, ...)``.
        x2: inputs, shape ``(n2, ...)``; ``None`` for the Gram matrix of ``x1`` with itself.
        layout: ``"full"`` ``(n1, O, n2, O)``, ``"blocks"`` ``(O, O, n1, n2)`` or ``"trace"`` ``(n1, n2)``.
        centered: kernel of the tangent features centred over each input set.
        chunk_size: examples per forward/backward pass (memory of the factors grows with it).

    Returns:
        The Gram matrix in the dtype and device of the model's outputs.

    Example:
        >>> net = nn.Linear(2, 1).double()  # f = w . x + b: Theta(x, x') = x . x' + 1
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> empirical_ntk(net, x, layout="trace").tolist()
        [[2.0, 2.0], [2.0, 6.0]]
    """
    _check_layout(layout)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    trace = layout == "trace"
    f1 = [tangent_factors(model, c) for c in _chunks(x1, chunk_size)]
    f2 = f1 if x2 is None else [tangent_factors(model, c) for c in _chunks(x2, chunk_size)]
    gram = None  # filled block by block: peak memory is one Gram matrix plus one block
    r0 = 0
    for a in f1:
        c0 = 0
        for b in f2:
            block = _gram_from_factors(a, b, trace)
            if gram is None:
                n1, n2 = len(x1), len(x1 if x2 is None else x2)
                shape = (n1, n2) if trace else (n1, block.shape[1], n2, block.shape[3])
                gram = block.new_empty(shape)
            rows, cols = block.shape[0], block.shape[-1 if trace else 2]
            if trace:
                gram[r0 : r0 + rows, c0 : c0 + cols] = block
            else:
                gram[r0 : r0 + rows, :, c0 : c0 + cols] = block
            c0 += cols
        r0 += rows
    if centered:
        gram = center_examples(gram, layout="trace" if trace else "full")
    return _to_layout(gram, layout)


def empirical_ntk_reference(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    layout: Layout = "full",
    centered: bool = False,
) -> torch.Tensor:
    """Empirical NTK by the full Jacobian (``torch.func.jacrev`` + ``vmap``): same arguments as :func:`empirical_ntk`."""
    _check_layout(layout)
    j1 = jacobian(model, x1)
    j2 = j1 if x2 is None else jacobian(model, x2)
    if centered:
        j1, j2 = j1 - j1.mean(0, keepdim=True), j2 - j2.mean(0, keepdim=True)
    if layout == "trace":
        return torch.einsum("iop,jop->ij", j1, j2)
    return _to_layout(torch.einsum("iap,jbp->iajb", j1, j2), layout)


def _to_layout(full: torch.Tensor, layout: Layout) -> torch.Tensor:
    if layout == "blocks":
        return full.permute(1, 3, 0, 2)
    return full


def center_examples(gram: torch.Tensor, layout: Layout = "full") -> torch.Tensor:
    """Double-centre a Gram matrix over its example indices: ``C1 K C2`` with ``C = I - 11^T / n``.

    Args:
        gram: ``(n1, O, n2, O)`` for ``layout="full"``, ``(O, O, n1, n2)`` for ``"blocks"``, ``(n1, n2)`` for
            ``"trace"``.
        layout: how ``gram`` is laid out.
    """
    _check_layout(layout)
    rows, cols = {"full": (0, 2), "blocks": (2, 3), "trace": (0, 1)}[layout]
    gram = gram - gram.mean(rows, keepdim=True)
    return gram - gram.mean(cols, keepdim=True)
