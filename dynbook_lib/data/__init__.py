"""Data the fast profile can make offline (synthetic sets) and the loaders of the full profile."""

from dynbook_lib.data.synthetic import SparseRegression, sparse_regression

__all__ = ["SparseRegression", "sparse_regression"]
