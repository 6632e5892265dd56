"""Profiles: ``fast`` (<= 90 s on 2 CPU cores, offline data), ``full`` (the paper's scale, one GPU) and ``smoke``
(the full profile's code path, models and data pipeline at a tiny length: a check, on any CPU, that a full run will
not crash, before a GPU is spent on it; its claims are recorded and required nowhere)."""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

Profile = Literal["fast", "full", "smoke"]
PROFILES: tuple[str, ...] = get_args(Profile)
# the profiles in which a claim can be required: a smoke run measures nothing worth requiring
CLAIM_PROFILES: tuple[str, ...] = ("fast", "full")

C = TypeVar("C")


def check_profile(profile: object) -> str:
    """Return ``profile`` if it is known, else raise ``ValueError`` with one line naming the allowed ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    return str(profile)


def is_full(profile: str) -> bool:
    """True for the profiles that run the full profile's code path (``full`` and its tiny ``smoke`` version).

    Example:
        >>> is_full("smoke"), is_full("fast")
        (True, False)
    """
    return check_profile(profile) in ("full", "smoke")


def select_profile(profile: str, *, fast: C, full: C, smoke: C | None = None) -> C:
    """Pick a chapter's configuration for ``profile``; ``smoke`` is the full configuration at a tiny length.

    Example:
        >>> select_profile("fast", fast=1, full=2, smoke=3), select_profile("smoke", fast=1, full=2, smoke=3)
        (1, 3)
    """
    if check_profile(profile) == "smoke" and smoke is None:
        raise ValueError("this chapter defines no smoke configuration; use profile 'fast' or 'full'")
    return {"fast": fast, "full": full, "smoke": smoke}[profile]
