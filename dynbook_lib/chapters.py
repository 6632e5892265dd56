"""The book's chapters: slug, number, part, title, and the claim names each specification requires."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Chapter:
    """One chapter of the book.

    Attributes:
        number: position in the book (file prefix ``NN``).
        slug: the id used by the runner, the file names and the results file.
        title: the page title.
        part: the part of the book it belongs to.
        claims: the claim names its specification requires in the fast profile (``shared/chapters/NN-slug.md``, or
            the issue that changed them); the runner fails a chapter that does not record every one of them.
        checks: the consistency checks it must record (what holds by construction, shown apart from the claims).
        full_claims: claims required in the full profile only (``profiles=("full",)``): they do not reproduce at
            the fast size, for a reason the chapter states; every profile records them, and the fast one shows them
            without requiring them.
    """

    number: int
    slug: str
    title: str
    part: str
    claims: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    full_claims: tuple[str, ...] = ()

    @property
    def recorded_names(self) -> tuple[str, ...]:
        """Every name a run of the chapter must record, in any profile: claims, full-profile claims and checks."""
        return (*self.claims, *self.full_claims, *self.checks)

    @property
    def stem(self) -> str:
        return f"{self.number:02d}-{self.slug}"

    def source(self, root: Path) -> Path:
        """The reviewed source, ``notebooks/NN-slug.md``."""
        return root / "notebooks" / f"{self.stem}.md"

    def is_written(self, root: Path) -> bool:
        return self.source(root).exists()


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(
        1,
        "lazy-training",
        "Lazy training",
        "I Linearisation",
        ("linearization_error_slope", "lazy_generalizes_worse", "lazy_limit_is_kernel_regression"),
        ("displacement_slope",),
    ),
    Chapter(
        2,
        "mean-field",
        "Mean field and global convergence",
        "I Linearisation",
        ("meanfield_beats_lazy", "meanfield_displacement_flat", "lazy_displacement_decays", "global_convergence_relu"),
        full_claims=("global_convergence_sigmoid",),
    ),
    Chapter(
        3,
        "ntk-alignment",
        "NTK alignment: lazy vs hasty",
        "I Linearisation",
        ("alignment_increases", "effective_rank_decreases", "easy_aligns_faster", "complexity_tracks_test_error"),
        ("hasty_reverses_order",),
        full_claims=("hasty_delays_hard_examples",),
    ),
    Chapter(
        4,
        "ekfac",
        "EKFAC and the structure of the Fisher",
        "II Curvature",
        ("kfac_beats_diagonal",),
        ("ekfac_closer_than_kfac", "ekfac_before_rescaling_is_kfac", "stale_basis_still_closer"),
        full_claims=("ekfac_trains_faster", "ekfac_step_closer_to_natural_gradient"),
    ),
    Chapter(
        5,
        "alrao",
        "Alrao: random learning rates",
        "III Learning rates",
        ("alrao_close_to_best_sgd", "alrao_beats_median_sgd", "switch_picks_good_rate",
         "alrao_survives_where_sgd_diverges"),
    ),
    Chapter(
        6,
        "gaussian-preactivations",
        "Gaussian pre-activations: myth or reality?",
        "IV Initialisation",
        ("pairs_variance_preserved", "pairs_near_gaussian_narrow", "relu_not_gaussian", "tanh_not_gaussian",
         "eoc_map_fails_narrow"),
        ("pairs_gaussian_width1",),
    ),
    Chapter(
        7,
        "penalty-prior",
        "A penalty as the influence of a Bayesian prior",
        "V Bayes",
        ("prior_recovered", "heat_residual_admissible", "weight_decay_not_admissible"),
        ("one_over_n_is_bayesian", "kl_matches_penalty"),
    ),
    Chapter(
        8,
        "diagonal-networks",
        "Diagonal linear networks I: kernel and rich regimes",
        "VI Implicit bias",
        ("gd_reaches_potential_minimizer", "small_init_is_l1", "large_init_is_l2", "rich_regime_recovers_sparse"),
    ),
    Chapter(
        9,
        "diagonal-networks-dynamics",
        "Diagonal linear networks II: stochasticity, large steps, momentum, saddle-to-saddle, grokking",
        "VI Implicit bias",
        ("limit_is_effective_potential", "sgd_beats_gd", "large_step_gd_concentrates",
         "sgd_flatter_than_large_step_gd", "jump_times_match", "plateaus_match", "ends_at_min_l1", "same_lambda_same_solution",
         "larger_lambda_less_sparse", "drop_time_scales_as_one_over_lambda", "ends_at_min_norm"),
        ("invariant_exact",),
    ),
    Chapter(
        10,
        "heavy-tails",
        "Heavy tails of SGD",
        "VII Complexity of the dynamics",
        ("estimator_matches_theory", "heavier_with_step", "lighter_with_batch", "heavier_with_dimension"),
        ("critical_step_gives_alpha_two",),
    ),
)

BY_SLUG: dict[str, Chapter] = {c.slug: c for c in CHAPTERS}


def get_chapter(name: str) -> Chapter:
    """The chapter named by its slug (``diagonal-networks``), number (``8``, ``08``) or file stem
    (``08-diagonal-networks``); ``ValueError`` (one line, suggesting the nearest slug) when there is none.

    Example:
        >>> get_chapter("08").slug, get_chapter("08-diagonal-networks").slug
        ('diagonal-networks', 'diagonal-networks')
    """
    text = name.strip()
    if text in BY_SLUG:
        return BY_SLUG[text]
    for chapter in CHAPTERS:
        if text.isdigit() and int(text) == chapter.number or text == chapter.stem:
            return chapter
    near = difflib.get_close_matches(text, list(BY_SLUG), n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ValueError(f"unknown chapter {name!r}; {hint}chapters are: {', '.join(BY_SLUG)}")


def written_chapters(root: Path) -> list[Chapter]:
    """The chapters whose source notebook exists under ``root``, in book order."""
    return [c for c in CHAPTERS if c.is_written(root)]
