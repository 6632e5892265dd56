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

And kernel regression by gradient descent in function space, in closed form (:func:`kernel_gd_predict`).
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


def kernel_gd_predict(
    k_train: torch.Tensor,
    k_cross: torch.Tensor,
    y: torch.Tensor,
    *,
    rate: float | None = None,
    steps: int | None = None,
    rcond: float = 1e-10,
) -> torch.Tensor:
    """Predictions of kernel gradient descent ``f <- f - rate K (f - y)`` from ``f = 0``, in closed form.

    With ``K = U diag(lambda) U^T`` the training kernel, ``steps`` steps give the predictor
    ``f_t(x) = K(x, X) U diag((1 - (1 - rate lambda)^t) / lambda) U^T y``: each eigen-direction of the kernel is
    fitted at its own speed ``rate lambda``. This is what gradient descent on a linear model with features ``phi``
    (``K = Phi Phi^T``) and the loss ``(1/2n) ||Phi w - y||^2`` at step ``eta`` computes, with ``rate = eta / n``.
    ``steps=None`` is the limit ``t -> infinity``: ``K(x, X) K^+ y``, the minimum-norm interpolant when ``K`` is
    invertible (the ridgeless kernel regression), the least-squares fit on the kernel's range when it is not
    (eigenvalues below ``rcond * lambda_max`` count as zero).

    Args:
        k_train: ``(n, n)`` kernel of the training inputs (symmetric positive semi-definite).
        k_cross: ``(n', n)`` kernel between the inputs to predict and the training inputs.
        y: training targets ``(n,)`` or ``(n, C)``.
        rate: step in function space (``eta / n``); needed when ``steps`` is given, and below ``2 / lambda_max``.
        steps: number of steps, or ``None`` for the limit.
        rcond: relative threshold under which an eigenvalue counts as zero.

    Example:
        >>> k = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> kernel_gd_predict(k, k, torch.tensor([1.0, 1.0], dtype=torch.float64)).tolist()  # interpolates
        [1.0, 1.0]
        >>> kernel_gd_predict(k, k, torch.tensor([1.0, 1.0], dtype=torch.float64), rate=0.5, steps=1).tolist()
        [1.0, 0.5]
    """
    n = k_train.shape[0]
    if k_train.shape != (n, n) or k_cross.ndim != 2 or k_cross.shape[1] != n or y.shape[0] != n:
        raise ValueError(f"kernel_gd_predict needs k_train (n, n), k_cross (n', n) and y (n, ...); got "
                         f"{tuple(k_train.shape)}, {tuple(k_cross.shape)}, {tuple(y.shape)}")
    lam, u = torch.linalg.eigh(k_train)
    lam = lam.clamp_min(0)
    kept = lam > rcond * lam.max()
    if steps is None:
        gain = torch.where(kept, 1 / torch.where(kept, lam, 1), 0)
    else:
        if rate is None or rate <= 0 or steps < 0:
            raise ValueError(f"kernel_gd_predict needs rate > 0 and steps >= 0 for a finite time, got rate={rate}, "
                             f"steps={steps}")
        if rate * float(lam.max()) >= 2:
            raise ValueError(f"rate {rate:.3g} diverges: it must be below 2 / lambda_max = {2 / float(lam.max()):.3g}")
        # (1 - (1 - r l)^t) / l, written with expm1/log1p so that small r l keeps its digits (-> r t as l -> 0).
        decay = torch.expm1(steps * torch.log1p(-rate * lam))
        gain = torch.where(lam > 0, -decay / torch.where(lam > 0, lam, 1), rate * steps)
    coef = u @ (gain.reshape(-1, *[1] * (y.ndim - 1)) * (u.T @ y.to(u.dtype)))
    return k_cross.to(u.dtype) @ coef
