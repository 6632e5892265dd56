"""The small core every chapter uses: seeding, devices, profiles, claims, results, progress bars, glue."""

from dynbook_lib.core.claims import Claim, ChapterRecord, ReproductionTable
from dynbook_lib.core.devices import resolve_device
from dynbook_lib.core.glue import glue
from dynbook_lib.core.profiles import is_full, select_profile
from dynbook_lib.core.progress import progress
from dynbook_lib.core.seeding import make_generator

__all__ = ["Claim", "ChapterRecord", "ReproductionTable", "make_generator", "progress", "resolve_device",
           "glue", "is_full", "select_profile"]
