"""The Fisher information matrix of a network and its approximations, all with one interface.

**Convention.** For a model with outputs ``f(x) in R^O`` and a predictive law ``p(y | f)``, the Fisher is the mean
over the ``n`` examples (never the sum) of the exact expectation over ``y``:

``F = (1/n) sum_i J_i^T B_i J_i``, ``J_i = d f(x_i) / dw`` (``O x P``), ``B_i`` the output-space Fisher:

* ``loss="regression"``: Gaussian ``p(y | f) = N(f, I)``, ``B = I``; ``F`` is the Gauss-Newton matrix of the loss
  ``(1/2) ||f - y||^2`` averaged over examples. Without the 1/2 (``||f - y||^2``) the Gauss-Newton matrix is ``2F``;
  for ``N(f, sigma^2 I)`` divide by ``sigma^2``.
* ``loss="classification"``: softmax over logits ``f``, ``B = diag(p) - p p^T``; ``F`` is the Gauss-Newton matrix of
  the mean cross-entropy.
* ``loss="bernoulli"``: independent Bernoulli outputs with logits ``f`` (``p = sigmoid(f)``), ``B = diag(p (1 - p))``;
  ``F`` is the Gauss-Newton matrix of the binary cross-entropy *summed* over the ``O`` outputs and averaged over
  examples (an autoencoder's loss per image, not per pixel: per pixel divides ``F`` by ``O``).

``B_i = L_i L_i^T`` with ``L = I`` (regression), ``L = diag(sqrt p) - p sqrt(p)^T`` (classification) or
``L = diag(sqrt(p (1 - p)))`` (Bernoulli), so
``F = (1/n) sum_{i,k} psi_{ik} psi_{ik}^T`` with ``psi_{ik} = J_i^T L_i[:, k]``: the per-example gradients of the
tangent factors (:mod:`dynbook_lib.tangent`) with cotangents ``L_i[:, k]``. Every matrix below is built from them.

**Approximations** (one class each, same calls):

* :class:`DenseFisher`: ``F`` itself, ``P x P``;
* :class:`BlockDiagFisher`: the diagonal blocks of ``F``, one per layer (weight and bias together);
* :class:`DiagFisher`: the diagonal of ``F``;
* :class:`KFACFisher` (Martens & Grosse 2015): for a ``Linear`` layer with input ``a~ = [a, 1]`` and output gradients
  ``g_k``, the block ``E_i[sum_k (g_k a~^T as a vector)(...)^T]`` is replaced by ``A (x) G`` with
  ``A = (1/n) sum_i a~_i a~_i^T`` and ``G = (1/n) sum_{i,k} g_{ik} g_{ik}^T`` (each factor carries ``1/n``;
  nngeometry 0.4's ``PMatKFAC`` moves ``sqrt(O)`` from ``G`` to ``A``, which leaves ``A (x) G`` unchanged: the
  tests check that the matrices are equal); on the layer's matrix ``V = [V_W | V_b]`` (``d_out x (d_in + 1)``) it
  acts as ``V -> G V A``;
* :class:`EKFACFisher` (George et al. 2018): ``U diag(s) U^T`` in the Kronecker-factored eigenbasis
  ``U = U_G (x) U_A`` of KFAC, with ``s_{ab} = (1/n) sum_{i,k} (U_G^T g_{ik})_a^2 (U_A^T a~_i)_b^2``, the diagonal of
  ``U^T F U`` and hence the Frobenius-closest matrix with that eigenbasis: never farther from ``F`` than KFAC. With
  ``s = lambda_G (x) lambda_A`` it is KFAC.

Each answers ``mv(v)``, ``vTMv(v)``, ``solve(v, damping)`` (``(M + damping I)^{-1} v``, damping added to every
eigenvalue exactly, not factored), ``trace()``, ``to_dense()`` and ``frobenius_distance(other)``. Vectors are flat,
in ``model.named_parameters()`` order (``weight.flatten()`` then ``bias`` for each layer), shape ``(P,)`` or
``(B, P)``. Build one with :func:`fisher_matrix`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import nn

from dynbook_lib.tangent import TangentFactors, tangent_factors

Loss = Literal["regression", "classification", "bernoulli"]
Kind = Literal["dense", "block_diag", "diag", "kfac", "ekfac"]
_LOSSES = ("regression", "classification", "bernoulli")
_KINDS = ("dense", "block_diag", "diag", "kfac", "ekfac")


def output_fisher_sqrt(outputs: torch.Tensor, loss: Loss) -> torch.Tensor:
    """``L_i`` with ``L_i L_i^T = B_i``, the output-space Fisher, shape ``(n, O, O)``; column ``k`` is a cotangent.

    Example:
        >>> logits = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)
        >>> p = logits.softmax(-1)[0]
        >>> L = output_fisher_sqrt(logits, "classification")[0]
        >>> torch.allclose(L @ L.T, torch.diag(p) - torch.outer(p, p))
        True
        >>> output_fisher_sqrt(torch.zeros(1, 2), "bernoulli")[0].tolist()  # sqrt(p (1 - p)) = 1/2 at p = 1/2
        [[0.5, 0.0], [0.0, 0.5]]
    """
    if loss not in _LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(_LOSSES)}")
    n, n_out = outputs.shape
    eye = torch.eye(n_out, dtype=outputs.dtype, device=outputs.device)
    if loss == "regression":
        return eye.expand(n, n_out, n_out)
    if loss == "bernoulli":
        p = torch.sigmoid(outputs.detach())
        return torch.diag_embed((p * (1 - p)).sqrt())
    p = outputs.detach().softmax(-1)
    s = p.sqrt()
    return torch.diag_embed(s) - p.unsqueeze(-1) * s.unsqueeze(-2)


def fisher_factors(model: nn.Module, x: torch.Tensor, loss: Loss = "regression") -> TangentFactors:
    """Tangent factors whose cotangents are the columns of ``L_i`` (see the module docstring)."""
    with torch.no_grad():
        outputs = model(x)
    return tangent_factors(model, x, output_fisher_sqrt(outputs, loss).transpose(1, 2))


def _batch(v: torch.Tensor) -> tuple[torch.Tensor, bool]:
    return (v, False) if v.ndim == 2 else (v.unsqueeze(0), True)


class FisherMatrix(ABC):
    """Common interface of the Fisher representations (``P x P`` symmetric positive semi-definite matrices)."""

    def __init__(self, slices: list[slice]) -> None:
        self.slices = slices
        self.numel = slices[-1].stop if slices else 0

    @abstractmethod
    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """``M v`` for ``v`` of shape ``(P,)`` or ``(B, P)``."""

    @abstractmethod
    def solve(self, v: torch.Tensor, damping: float) -> torch.Tensor:
        """``(M + damping I)^{-1} v``; ``damping > 0`` (or ``>= 0`` when ``M`` is invertible)."""

    @abstractmethod
    def trace(self) -> torch.Tensor:
        """``Tr M``."""

    @abstractmethod
    def to_dense(self) -> torch.Tensor:
        """The ``P x P`` matrix."""

    def layer_block(self, i: int) -> torch.Tensor:
        """The diagonal block of layer ``i`` (rows and columns ``self.slices[i]``), without forming the ``P x P``
        matrix where the structure allows it: equal to ``to_dense()[s, s]`` (tested)."""
        s = self.slices[i]
        return self.to_dense()[s, s]

    def vTMv(self, v: torch.Tensor) -> torch.Tensor:  # noqa: N802 (the name of the operation in nngeometry)
        """``v^T M v``; shape ``()`` or ``(B,)``."""
        return (v * self.mv(v)).sum(-1)

    def frobenius_distance(self, other: FisherMatrix | torch.Tensor, *, per_layer: bool = False) -> torch.Tensor:
        """``||M - M'||_F``, over the whole matrix or (``per_layer``) over each layer's diagonal block."""
        dense_other = other if isinstance(other, torch.Tensor) else other.to_dense()
        diff = self.to_dense() - dense_other
        if not per_layer:
            return torch.linalg.matrix_norm(diff)
        return torch.stack([torch.linalg.matrix_norm(diff[s, s]) for s in self.slices])

    def relative_error(self, reference: FisherMatrix | torch.Tensor, *, per_layer: bool = False) -> torch.Tensor:
        """``||M - R||_F / ||R||_F`` over the whole matrix or (``per_layer``) each layer's diagonal block."""
        dense_ref = reference if isinstance(reference, torch.Tensor) else reference.to_dense()
        if not per_layer:
            return self.frobenius_distance(dense_ref) / torch.linalg.matrix_norm(dense_ref)
        norms = torch.stack([torch.linalg.matrix_norm(dense_ref[s, s]) for s in self.slices])
        return self.frobenius_distance(dense_ref, per_layer=True) / norms

    def layer_block(self, index: int) -> torch.Tensor:
        """The dense diagonal block of layer ``index``."""
        s = self.slices[index]
        return self.to_dense()[s, s]


class DenseFisher(FisherMatrix):
    """The exact Fisher ``F = (1/n) sum_{i,k} psi_ik psi_ik^T`` as a dense ``P x P`` matrix."""

    def __init__(self, factors: TangentFactors) -> None:
        super().__init__(factors.layer_slices())
        psi = factors.per_example_grads()
        n = psi.shape[0]
        psi = psi.reshape(-1, psi.shape[-1])
        self.matrix = psi.T @ psi / n

    def mv(self, v):
        return v @ self.matrix  # symmetric

    def solve(self, v, damping):
        v, single = _batch(v)
        eye = torch.eye(self.numel, dtype=v.dtype, device=v.device)
        out = torch.linalg.solve(self.matrix + damping * eye, v.T).T
        return out[0] if single else out

    def trace(self):
        return torch.trace(self.matrix)

    def to_dense(self):
        return self.matrix


def _flat_positions(d_out: int, d_a: int, bias: bool) -> torch.Tensor:
    """Position in the flat layer vector (``weight.flatten()`` then ``bias``) of each entry of the row-major
    ``[W | b]`` matrix of a ``Linear`` layer, ``d_a = d_in (+1 with a bias)``."""
    d_in = d_a - 1 if bias else d_a
    rows = torch.arange(d_out).unsqueeze(1)
    cols = torch.arange(d_a).unsqueeze(0)
    pos = rows * d_in + cols
    if bias:
        pos = torch.where(cols == d_in, d_out * d_in + rows, pos)
    return pos.flatten()


def linear_layer_block(a: torch.Tensor, g: torch.Tensor, bias: bool) -> torch.Tensor:
    """The exact Fisher block ``(1/n) sum_i (sum_k g_ik g_ik^T) (x) (a~_i a~_i^T)`` of a ``Linear`` layer from its
    factors ``a`` (``(n, d_a)``) and ``g`` (``(n, K, d_out)``), in flat parameter order.

    The fast path of :class:`BlockDiagFisher`: ``n d_out^2 d_a^2`` operations instead of the ``n K (d_out d_a)^2`` of
    the per-example gradients (tested equal). It uses that a layer's per-example gradient is ``g_ik a~_i^T``.
    """
    n, d_a = a.shape
    d_out = g.shape[-1]
    g_outer = torch.einsum("iko,ikp->iop", g, g).reshape(n, -1)  # sum_k g g^T per example
    a_outer = (a.unsqueeze(2) * a.unsqueeze(1)).reshape(n, -1)
    block = (g_outer.T @ a_outer / n).reshape(d_out, d_out, d_a, d_a).permute(0, 2, 1, 3)
    order = torch.argsort(_flat_positions(d_out, d_a, bias))
    return block.reshape(d_out * d_a, d_out * d_a)[order][:, order]


class BlockDiagFisher(FisherMatrix):
    """The layer-diagonal blocks of the Fisher (cross-layer terms set to zero).

    ``Linear`` layers whose weight is trained take :func:`linear_layer_block`; other layers the per-example
    gradients (``fast=False`` uses the per-example gradients everywhere: the readable reference path).
    """

    def __init__(self, factors: TangentFactors, *, fast: bool = True) -> None:
        super().__init__(factors.layer_slices())
        self.blocks = []
        for layer in factors.layers:
            if fast and layer.factored and "weight" in layer.params:
                self.blocks.append(linear_layer_block(layer.a, layer.g, layer.has_bias))
                continue
            psi = layer.per_example_grads()
            n = psi.shape[0]
            psi = psi.reshape(-1, psi.shape[-1])
            self.blocks.append(psi.T @ psi / n)

    def mv(self, v):
        return torch.cat([v[..., s] @ b for s, b in zip(self.slices, self.blocks)], dim=-1)

    def solve(self, v, damping):
        v, single = _batch(v)
        parts = []
        for s, b in zip(self.slices, self.blocks):
            eye = torch.eye(b.shape[0], dtype=b.dtype, device=b.device)
            chol, info = torch.linalg.cholesky_ex(b + damping * eye)  # half the work of LU on a PSD block
            if int(info) == 0:
                parts.append(torch.cholesky_solve(v[:, s].T, chol).T)
            else:  # not numerically positive definite (damping 0 on a singular block): LU says so if singular
                parts.append(torch.linalg.solve(b + damping * eye, v[:, s].T).T)
        out = torch.cat(parts, dim=-1)
        return out[0] if single else out

    def trace(self):
        return sum(torch.trace(b) for b in self.blocks)

    def to_dense(self):
        return torch.block_diag(*self.blocks)

    def layer_block(self, i):
        return self.blocks[i]


class DiagFisher(FisherMatrix):
    """The diagonal of the Fisher, ``(1/n) sum_{i,k} psi_ik^2``."""

    def __init__(self, factors: TangentFactors) -> None:
        super().__init__(factors.layer_slices())
        psi = factors.per_example_grads()
        self.diagonal = (psi**2).sum((0, 1)) / psi.shape[0]

    def mv(self, v):
        return v * self.diagonal

    def solve(self, v, damping):
        return v / (self.diagonal + damping)

    def trace(self):
        return self.diagonal.sum()

    def to_dense(self):
        return torch.diag(self.diagonal)

    def layer_block(self, i):
        return torch.diag(self.diagonal[self.slices[i]])


def _check_kronecker_layers(factors: TangentFactors) -> None:
    for layer in factors.layers:
        if not layer.factored:
            raise ValueError(
                f"KFAC and EKFAC cover nn.Linear layers on 2-D inputs; {layer.name!r} is a "
                f"{type(layer.module).__name__}: use kind='dense', 'block_diag' or 'diag'"
            )


class _KroneckerLayers(FisherMatrix):
    """Shared layout code for the Kronecker-factored representations (``Linear`` layers only)."""

    def __init__(self, factors: TangentFactors) -> None:
        _check_kronecker_layers(factors)
        super().__init__(factors.layer_slices())
        self.shapes = [(layer.g.shape[-1], layer.a.shape[-1], layer.has_bias) for layer in factors.layers]

    def _to_matrices(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Flat ``(B, P)`` -> per layer ``(B, d_out, d_in [+1])`` matrices ``[V_W | V_b]``."""
        out = []
        for s, (d_out, d_a, bias) in zip(self.slices, self.shapes):
            chunk = v[:, s]
            d_in = d_a - 1 if bias else d_a
            w = chunk[:, : d_out * d_in].reshape(-1, d_out, d_in)
            out.append(torch.cat([w, chunk[:, d_out * d_in :, None]], dim=-1) if bias else w)
        return out

    def _from_matrices(self, mats: list[torch.Tensor]) -> torch.Tensor:
        parts = []
        for m, (_, d_a, bias) in zip(mats, self.shapes):
            parts.append(m[..., :-1].flatten(1) if bias else m.flatten(1))
            if bias:
                parts.append(m[..., -1])
        return torch.cat(parts, dim=-1)

    def _permutation(self, index: int) -> torch.Tensor:
        """Position in the flat layer vector of each entry of the row-major ``[W | b]`` matrix."""
        return _flat_positions(*self.shapes[index])

    def _apply(self, v: torch.Tensor, op) -> torch.Tensor:
        v, single = _batch(v)
        out = self._from_matrices([op(i, m) for i, m in enumerate(self._to_matrices(v))])
        return out[0] if single else out

    def _layer_dense(self, index: int) -> torch.Tensor:
        """Dense block of layer ``index`` in the ``[W | b]`` row-major order."""
        raise NotImplementedError

    def _layer_basis(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U_A, U_G)`` of layer ``index``."""
        raise NotImplementedError

    def kfe(self, index: int) -> torch.Tensor:
        """The Kronecker-factored eigenbasis ``U = U_G (x) U_A`` of layer ``index`` as a ``P_l x P_l`` orthogonal
        matrix whose rows are in flat parameter order: ``U^T B U`` is a layer block ``B`` seen in the KFE (diagonal for
        KFAC and EKFAC)."""
        ua, ug = self._layer_basis(index)
        order = torch.argsort(self._permutation(index))
        return torch.kron(ug, ua)[order]

    def to_dense(self):
        return torch.block_diag(*(self.layer_block(i) for i in range(len(self.shapes))))

    def layer_block(self, i):
        order = torch.argsort(self._permutation(i))  # flat position -> [W | b] position
        return self._layer_dense(i)[order][:, order]


class KFACFisher(_KroneckerLayers):
    """KFAC: ``A (x) G`` per ``Linear`` layer (see the module docstring for the scale convention)."""

    def __init__(self, factors: TangentFactors) -> None:
        super().__init__(factors)
        self.a_factors, self.g_factors = [], []
        for layer in factors.layers:
            n = layer.a.shape[0]
            g = layer.g.reshape(-1, layer.g.shape[-1])
            self.a_factors.append(layer.a.T @ layer.a / n)
            self.g_factors.append(g.T @ g / n)

    def eigenbasis(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per layer ``(lambda_A, U_A, lambda_G, U_G)`` from ``torch.linalg.eigh``."""
        out = []
        for a, g in zip(self.a_factors, self.g_factors):
            la, ua = torch.linalg.eigh(a)
            lg, ug = torch.linalg.eigh(g)
            out.append((la, ua, lg, ug))
        return out

    def mv(self, v):
        return self._apply(v, lambda i, m: self.g_factors[i] @ m @ self.a_factors[i])

    def solve(self, v, damping):
        basis = self.eigenbasis()

        def op(i, m):
            la, ua, lg, ug = basis[i]
            return ug @ ((ug.T @ m @ ua) / (torch.outer(lg, la) + damping)) @ ua.T

        return self._apply(v, op)

    def trace(self):
        return sum(torch.trace(a) * torch.trace(g) for a, g in zip(self.a_factors, self.g_factors))

    def _layer_dense(self, index):
        return torch.kron(self.g_factors[index], self.a_factors[index])

    def _layer_basis(self, index):
        _, ua, _, ug = self.eigenbasis()[index]
        return ua, ug


class EKFACFisher(_KroneckerLayers):
    """EKFAC: ``U diag(s) U^T`` in the KFAC eigenbasis ``U = U_G (x) U_A``, one ``s`` of shape ``(d_out, d_in+1)``.

    Build it with :meth:`from_kfac` (eigenbasis of a KFAC matrix, diagonal ``s`` set to KFAC's eigenvalues
    ``lambda_G lambda_A^T``, so it equals KFAC) and then :meth:`update_diagonal` (``s`` re-estimated from per-example
    statistics in that basis, possibly at other parameters or examples: the amortised EKFAC of the paper).
    """

    def __init__(self, kfac: KFACFisher) -> None:
        self.slices, self.numel, self.shapes = kfac.slices, kfac.numel, kfac.shapes
        self.bases = [(ua, ug) for _, ua, _, ug in kfac.eigenbasis()]
        self.scales = [torch.outer(lg, la) for la, _, lg, _ in kfac.eigenbasis()]

    @classmethod
    def from_kfac(cls, kfac: KFACFisher) -> EKFACFisher:
        """EKFAC with KFAC's eigenbasis and eigenvalues (equal to ``kfac`` until :meth:`update_diagonal`)."""
        return cls(kfac)

    def update_diagonal(self, factors: TangentFactors) -> EKFACFisher:
        """Set ``s = diag(U^T F U)`` from tangent factors (e.g. :func:`fisher_factors` at the current weights)."""
        _check_kronecker_layers(factors)
        for i, layer in enumerate(factors.layers):
            ua, ug = self.bases[i]
            a_kfe = (layer.a @ ua) ** 2  # (n, d_a)
            g_kfe = (layer.g @ ug) ** 2  # (n, K, d_out)
            self.scales[i] = torch.einsum("ika,ib->ab", g_kfe, a_kfe) / layer.a.shape[0]
        return self

    def mv(self, v):
        def op(i, m):
            ua, ug = self.bases[i]
            return ug @ ((ug.T @ m @ ua) * self.scales[i]) @ ua.T

        return self._apply(v, op)

    def solve(self, v, damping):
        def op(i, m):
            ua, ug = self.bases[i]
            return ug @ ((ug.T @ m @ ua) / (self.scales[i] + damping)) @ ua.T

        return self._apply(v, op)

    def trace(self):
        return sum(s.sum() for s in self.scales)

    def _layer_basis(self, index):
        return self.bases[index]

    def _layer_dense(self, index):
        ua, ug = self.bases[index]
        u = torch.kron(ug, ua)
        return (u * self.scales[index].flatten()) @ u.T


def fisher_matrix(model: nn.Module, x: torch.Tensor, kind: Kind, loss: Loss = "regression") -> FisherMatrix:
    """The Fisher of ``model`` on the examples ``x`` in the representation ``kind``.

    Args:
        model: maps ``(n, ...)`` to ``(n, O)`` (logits for ``loss="classification"``).
        x: inputs, shape ``(n, ...)``.
        kind: ``"dense"``, ``"block_diag"``, ``"diag"``, ``"kfac"`` or ``"ekfac"`` (``Linear`` layers only for the
            last two).
        loss: ``"regression"`` (``B = I``), ``"classification"`` (``B = diag p - p p^T``) or ``"bernoulli"``
            (``B = diag(p (1 - p))``, ``p = sigmoid(f)``).

    Example:
        >>> net = nn.Linear(2, 1, bias=False).double()  # F = E[x x^T]
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> fisher_matrix(net, x, "dense").to_dense().tolist()
        [[1.0, 1.0], [1.0, 2.0]]
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown Fisher kind {kind!r}; expected one of {', '.join(_KINDS)}")
    factors = fisher_factors(model, x, loss)
    if kind == "dense":
        return DenseFisher(factors)
    if kind == "block_diag":
        return BlockDiagFisher(factors)
    if kind == "diag":
        return DiagFisher(factors)
    kfac = KFACFisher(factors)
    return kfac if kind == "kfac" else EKFACFisher.from_kfac(kfac).update_diagonal(factors)


__all__ = [
    "BlockDiagFisher",
    "DenseFisher",
    "DiagFisher",
    "EKFACFisher",
    "FisherMatrix",
    "KFACFisher",
    "fisher_factors",
    "fisher_matrix",
    "linear_layer_block",
    "output_fisher_sqrt",
]
