"""Numbers in a chapter's prose that come from its run (myst-nb ``glue``), without making myst-nb a dependency."""

from __future__ import annotations

from typing import Any


def glue(name: str, value: Any) -> None:
    """Keep ``value`` under ``name`` for the rendered prose, where ``{glue:text}`name:.2f``` prints it; nothing is
    displayed in the notebook. Where myst-nb is not installed (Colab), this does nothing: the prose then shows the
    role's source, and the printed outputs above it carry the same numbers.

    Example:
        >>> glue("kfac_total_error", 0.776)  # in a notebook; a no-op value check here
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a glue name must be an identifier, got {name!r}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, value, display=False)
