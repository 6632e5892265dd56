"""Profiles: ``fast`` (<= 90 s on 2 CPU cores, offline data) and ``full`` (the paper's scale, one GPU)."""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

Profile = Literal["fast", "full"]
PROFILES: tuple[str, ...] = get_args(Profile)

C = TypeVar("C")


def check_profile(profile: object) -> str:
    """Return ``profile`` if it is known, else raise ``ValueError`` with one line naming the allowed ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    return str(profile)


def select_profile(profile: str, *, fast: C, full: C) -> C:
    """Pick a chapter's configuration for ``profile``.

    Example:
        >>> select_profile("fast", fast=1, full=2)
        1
    """
    return {"fast": fast, "full": full}[check_profile(profile)]
