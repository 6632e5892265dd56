"""Measures of kernel (Gram) matrices: centring, CKA, alignment to a target, spectrum and effective rank.

Definitions (Cortes, Mohri & Rostamizadeh 2012; Kornblith et al. 2019; Baratin et al. 2021), for ``n x n`` symmetric
matrices and ``C = I - 11^T / n``:

* centred kernel ``K_c = C K C``;
* centred kernel alignment ``CKA(K, K') = Tr(K_c K'_c) / (||K_c||_F ||K'_c||_F)``, in ``[-1, 1]``, invariant to
  scaling either kernel;
* alignment to the task: ``A(K, Y) = CKA(K, Y Y^T)`` with ``Y`` the one-hot labels (or real targets, ``(n, C)``); for
  one target vector this is ``y_c^T K_c y_c / (||K_c||_F ||y_c||^2)``;
* effective rank ``exp(H(p))`` with ``p = lambda / sum lambda`` the normalised eigenvalues and ``H`` the Shannon
  entropy (Roy & Vetterli 2007): ``r`` for ``r`` equal non-zero eigenvalues.
"""

from __future__ import annotations

import torch


def center(k: torch.Tensor) -> torch.Tensor:
    """``C K C`` with ``C = I - 11^T / n`` (rows and columns of ``k`` have zero mean afterwards)."""
    k = k - k.mean(0, keepdim=True)
    return k - k.mean(1, keepdim=True)


def cka(k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """Centred kernel alignment of two ``n x n`` kernels.

    Example:
        >>> k = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> float(cka(k, 5 * k))
        1.0
    """
    if k1.shape != k2.shape or k1.ndim != 2:
        raise ValueError(f"cka needs two n x n matrices of the same shape, got {tuple(k1.shape)}, {tuple(k2.shape)}")
    c1, c2 = center(k1), center(k2)
    return (c1 * c2).sum() / (torch.linalg.matrix_norm(c1) * torch.linalg.matrix_norm(c2))


def one_hot_targets(labels: torch.Tensor, n_classes: int | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """One-hot matrix ``(n, C)`` of integer labels."""
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    return torch.nn.functional.one_hot(labels.long(), n_classes).to(dtype)


def target_alignment(k: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Alignment ``CKA(K, Y Y^T)`` of a kernel with the task.

    Args:
        k: ``n x n`` kernel.
        targets: integer labels ``(n,)`` (one-hot encoded here), or real targets ``(n,)`` or ``(n, C)``.

    Example:
        >>> y = torch.tensor([0, 1, 1, 0])
        >>> yy = one_hot_targets(y) @ one_hot_targets(y).T
        >>> float(target_alignment(yy, y))
        1.0
    """
    if not targets.is_floating_point():
        targets = one_hot_targets(targets, dtype=k.dtype)
    targets = targets.to(k.dtype).reshape(targets.shape[0], -1)
    return cka(k, targets @ targets.T)


def spectrum(k: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric kernel, in decreasing order."""
    return torch.linalg.eigvalsh(k).flip(0)


def effective_rank(k: torch.Tensor, *, eigenvalues: bool = False) -> torch.Tensor:
    """``exp`` of the entropy of the normalised eigenvalues of a positive semi-definite kernel.

    Args:
        k: ``n x n`` kernel, or its eigenvalues when ``eigenvalues=True``.
        eigenvalues: ``k`` already holds the eigenvalues.

    Example:
        >>> float(effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))))
        2.0
    """
    lam = k if eigenvalues else torch.linalg.eigvalsh(k)
    lam = lam.clamp_min(0)  # round-off negatives of a PSD matrix
    p = lam / lam.sum()
    entropy = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum()
    return torch.exp(entropy)
