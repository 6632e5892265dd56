"""The linearised (first-order Taylor) model of a network around its initialisation, as a trainable module.

``T(w)(x) = f(w0, x) + <grad_w f(w0, x), w - w0>`` (Chizat, Oyallon & Bach 2019; Lee et al. 2019). Training ``T``
by gradient descent is kernel regression with the tangent kernel at ``w0`` (:mod:`dynbook_lib.ntk`); the lazy-training
theorem says the rescaled network ``alpha (f(w) - f(w0))`` trained with step ``eta / alpha^2`` stays within
``O(1/alpha)`` of it. The Jacobian-vector product is computed by forward-mode AD (``torch.func.jvp``), so a forward
pass of ``T`` costs about two of ``f`` and the Jacobian is never formed; ``T`` is differentiable in ``w``.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.func import functional_call, jvp


class LinearizedModel(nn.Module):
    """``T(w)(x) = f(w0, x) + J(w0, x) (w - w0)``, with trainable ``w`` initialised at ``w0``.

    Args:
        model: the network ``f``; its current parameters are ``w0`` (copied: later changes to ``model`` do not move
            ``w0``). Examples must not interact in its forward pass.
        centered: drop the constant ``f(w0, x)`` (then ``T(w0) = 0``: the tangent model of ``f(w) - f(w0)``).

    The trainable parameters are ``self.params`` (a ``ParameterDict`` keyed like ``model.named_parameters()`` with
    ``.`` replaced by ``-``; :meth:`named_weights` gives them in model order); only those that require grad in
    ``model`` move. ``w0`` is held as buffers of ``self.base``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
        >>> lin = LinearizedModel(net)
        >>> x = torch.randn(4, 2, dtype=torch.float64)
        >>> torch.allclose(lin(x), net(x))  # equal at w = w0
        True
    """

    def __init__(self, model: nn.Module, *, centered: bool = False) -> None:
        super().__init__()
        self.base = copy.deepcopy(model)
        # w0 and any frozen parameters become buffers of the copy: they move with .to() but are not trained
        for module in self.base.modules():
            for name in list(module._parameters):
                tensor = module._parameters.pop(name)
                module.register_buffer(name, None if tensor is None else tensor.detach())
        self.centered = centered
        self._names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.params = nn.ParameterDict(
            {self._key(n): nn.Parameter(p.detach().clone()) for n, p in model.named_parameters() if p.requires_grad}
        )

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "-")

    def w0(self) -> dict[str, torch.Tensor]:
        """The expansion point, by parameter name."""
        buffers = dict(self.base.named_buffers())
        return {name: buffers[name] for name in self._names}

    def named_weights(self) -> dict[str, nn.Parameter]:
        """The trainable ``w``, by the model's parameter names, in model order."""
        return {name: self.params[self._key(name)] for name in self._names}

    def displacement(self) -> dict[str, torch.Tensor]:
        """``w - w0``, by parameter name."""
        w0 = self.w0()
        return {name: self.params[self._key(name)] - w0[name] for name in self._names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0 = self.w0()

        def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.base, p, (x,))

        with warnings.catch_warnings():  # torch 2.13's jvp calls the deprecated torch.jit.script internally
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning)
            f0, jvp_out = jvp(f, (w0,), (self.displacement(),))
        return jvp_out if self.centered else f0 + jvp_out
