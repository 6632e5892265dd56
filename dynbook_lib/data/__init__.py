"""Data the fast profile can make offline (synthetic sets) and the loaders of the full profile."""

from dynbook_lib.data.offline import digits_tensors, mnist1d_tensors
from dynbook_lib.data.synthetic import SparseRegression, TeacherStudent, sparse_regression, teacher_student, unit_sphere, yin_yang

__all__ = [
    "SparseRegression",
    "TeacherStudent",
    "digits_tensors",
    "mnist1d_tensors",
    "sparse_regression",
    "teacher_student",
    "unit_sphere",
    "yin_yang",
]
