"""Synthetic data sets generated from a seed: no download, identical on every machine for the same seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dynbook_lib.core.seeding import make_generator


@dataclass(frozen=True)
class SparseRegression:
    """A noiseless over-parameterised regression ``y = X beta_star`` with a sparse ``beta_star``.

    Attributes:
        X: design matrix, shape ``(n, d)``, i.i.d. standard Gaussian entries.
        y: targets, shape ``(n,)``.
        X_test: held-out inputs, shape ``(n_test, d)``.
        y_test: held-out targets, shape ``(n_test,)``.
        beta_star: the planted ``k``-sparse vector, shape ``(d,)``.
    """

    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    beta_star: torch.Tensor

    def test_mse(self, beta: torch.Tensor) -> torch.Tensor:
        """Mean squared test error ``mean((X_test beta - y_test)^2)`` (no 1/2), batched over leading dims of beta."""
        return ((beta @ self.X_test.T - self.y_test) ** 2).mean(-1)

    def to(self, device: torch.device | str) -> "SparseRegression":
        return SparseRegression(*(t.to(device) for t in (self.X, self.y, self.X_test, self.y_test, self.beta_star)))


def sparse_regression(
    n: int, d: int, k: int, *, seed: int, n_test: int = 1000, dtype: torch.dtype = torch.float64
) -> SparseRegression:
    """Sparse regression as in Woodworth et al. (2020): Gaussian ``X``, ``k`` non-zeros of value ``+-(1 + U[0, 1])``.

    Args:
        n: number of training points (``n < d`` for an over-parameterised problem).
        d: dimension.
        k: number of non-zero entries of ``beta_star``.
        seed: seed of the generator (CPU, so the same seed gives the same data on every device).
        n_test: number of test points.
        dtype: floating dtype of every tensor.

    Example:
        >>> data = sparse_regression(40, 100, 5, seed=0)
        >>> int((data.beta_star != 0).sum()), tuple(data.X.shape)
        (5, (40, 100))
    """
    if not 0 < k <= d or n <= 0 or n_test <= 0:
        raise ValueError(f"need 0 < k <= d and n, n_test > 0; got n={n}, d={d}, k={k}, n_test={n_test}")
    gen = make_generator(seed)
    support = torch.randperm(d, generator=gen)[:k]
    signs = torch.randint(0, 2, (k,), generator=gen, dtype=dtype) * 2 - 1
    beta_star = torch.zeros(d, dtype=dtype)
    beta_star[support] = signs * (1 + torch.rand(k, generator=gen, dtype=dtype))
    X = torch.randn(n, d, generator=gen, dtype=dtype)
    X_test = torch.randn(n_test, d, generator=gen, dtype=dtype)
    return SparseRegression(X, X @ beta_star, X_test, X_test @ beta_star, beta_star)


@dataclass(frozen=True)
class TeacherStudent:
    """Regression on the unit sphere with a planted two-layer ReLU teacher ``f*(x) = sum_j s_j relu(theta_j . x)``.

    Attributes:
        X, y: training inputs ``(n, d)`` (uniform on the sphere) and targets ``(n,)``.
        X_test, y_test: held-out inputs and targets.
        theta: teacher input weights ``(m0, d)``, unit rows.
        signs: teacher output weights ``(m0,)``, each ``+-1``.
    """

    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    theta: torch.Tensor
    signs: torch.Tensor

    def to(self, device: torch.device | str) -> "TeacherStudent":
        return TeacherStudent(*(t.to(device) for t in (self.X, self.y, self.X_test, self.y_test, self.theta, self.signs)))


def unit_sphere(n: int, d: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``n`` points uniform on the unit sphere of ``R^d`` (normalised Gaussians)."""
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    return x / x.norm(dim=1, keepdim=True)


def teacher_student(
    n: int, d: int, m0: int, *, seed: int, n_test: int = 1000, dtype: torch.dtype = torch.float64
) -> TeacherStudent:
    """The teacher-student task of Chizat, Oyallon & Bach (2019): ``m0`` unit ReLU neurons with output weights ``+-1``.

    Example:
        >>> task = teacher_student(10, 3, 2, seed=0)
        >>> tuple(task.X.shape), float(task.X.norm(dim=1).max())
        ((10, 3), 1.0)
    """
    if min(n, d, m0, n_test) <= 0:
        raise ValueError(f"need n, d, m0, n_test > 0; got n={n}, d={d}, m0={m0}, n_test={n_test}")
    gen = make_generator(seed)
    theta = unit_sphere(m0, d, gen, dtype)
    signs = torch.randint(0, 2, (m0,), generator=gen, dtype=dtype) * 2 - 1
    X, X_test = unit_sphere(n, d, gen, dtype), unit_sphere(n_test, d, gen, dtype)

    def teacher(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ theta.T) @ signs

    return TeacherStudent(X, teacher(X), X_test, teacher(X_test), theta, signs)


YIN, YANG, DOT = 0, 1, 2


def yin_yang_class(x: torch.Tensor, dot_radius: float = 0.1) -> torch.Tensor:
    """Class of points ``(n, 2)`` of the unit disk in the yin-yang symbol: ``DOT`` (2) within ``dot_radius`` of the
    eyes ``(+-1/2, 0)``; else ``YIN`` (0) in the upper half outside the left half-size circle or inside the right one;
    else ``YANG`` (1).

    Example:
        >>> yin_yang_class(torch.tensor([[0.0, 0.9], [0.0, -0.9], [0.5, 0.0], [0.5, -0.3]]))
        tensor([0, 1, 2, 0])
    """
    d_right = (x - x.new_tensor([0.5, 0.0])).norm(dim=1)
    d_left = (x - x.new_tensor([-0.5, 0.0])).norm(dim=1)
    yin = ((x[:, 1] > 0) & (d_left > 0.5)) | (d_right < 0.5)
    label = torch.where(yin, YIN, YANG)
    return torch.where((d_right < dot_radius) | (d_left < dot_radius), DOT, label)


def yin_yang(n: int, *, seed: int, dot_radius: float = 0.1,
             dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The yin-yang classification set (after Kriener, Göltz & Petrovici 2022): points uniform in the unit disk,
    drawn until each of the three classes (yin, yang, the two dots) has ``n // 3`` of them, so the small dots are as
    frequent as the large regions. Returns ``(x (3 (n // 3), 2), labels)`` shuffled.

    Example:
        >>> x, y = yin_yang(30, seed=0)
        >>> tuple(x.shape), torch.bincount(y).tolist(), bool((x.norm(dim=1) <= 1).all())
        ((30, 2), [10, 10, 10], True)
    """
    if n < 3:
        raise ValueError(f"need n >= 3 (n // 3 points per class), got {n}")
    gen = make_generator(seed)
    per_class = n // 3
    kept: list[list[torch.Tensor]] = [[], [], []]
    counts = [0, 0, 0]
    while min(counts) < per_class:
        candidates = torch.rand(4 * n, 2, generator=gen, dtype=dtype) * 2 - 1
        candidates = candidates[candidates.norm(dim=1) <= 1]
        labels = yin_yang_class(candidates, dot_radius)
        for c in range(3):
            take = candidates[labels == c][: per_class - counts[c]]
            kept[c].append(take)
            counts[c] += len(take)
    x = torch.cat([torch.cat(k) for k in kept])
    y = torch.arange(3).repeat_interleave(per_class)
    order = torch.randperm(len(y), generator=gen)
    return x[order], y[order]
