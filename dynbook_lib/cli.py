"""The ``dynbook`` command: ``dynbook run`` executes chapters, ``dynbook build`` also renders the book."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynbook_lib.chapters import BY_SLUG, get_chapter, written_chapters
from dynbook_lib.core.devices import DEVICES, resolve_device
from dynbook_lib.core.profiles import PROFILES
from dynbook_lib.core.seeding import check_seed


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"dynbook: error: {message}\n")


def _seed(text: str) -> int:
    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer in [0, 2**63), got {text!r}") from None


def make_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="dynbook", description="Execute and render the dynbook chapters.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name, help_text in (("run", "execute chapters and write their results"),
                            ("build", "execute what is not up to date, then render the HTML book")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("chapters", nargs="*", metavar="SLUG", help=f"chapters (default: all written): {', '.join(BY_SLUG)}")
        p.add_argument("--profile", default="fast", choices=PROFILES, help="problem sizes (default: fast)")
        p.add_argument("--device", default="auto", choices=DEVICES, help="auto picks CUDA when present (default: auto)")
        p.add_argument("--seed", default=0, type=_seed, help="seed of the run (default: 0)")
        p.add_argument("--out", default=Path("_build"), type=Path, help="output folder (default: _build)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from dynbook_lib import runner

    args = make_parser().parse_args(argv)
    try:
        root = runner.find_root()
        written = written_chapters(root)
        chapters = [get_chapter(slug) for slug in dict.fromkeys(args.chapters)] or written
        for chapter in chapters:
            if chapter not in written:
                raise ValueError(f"chapter {chapter.slug!r} is not written yet; written chapters: "
                                 f"{', '.join(c.slug for c in written) or 'none'}")
        resolve_device(args.device)
        runner.check_output_folder(args.out)
    except ValueError as err:
        print(f"dynbook: error: {err}", file=sys.stderr)
        return 2
    opts = runner.RunOptions(args.profile, args.device, args.seed, args.out.resolve())
    if args.command == "run":
        outcomes = runner.run_chapters(chapters, opts, root)
        render_code = 0
    else:
        outcomes, render_code = runner.build_book(chapters, opts, root)
    print()
    print(runner.summary_table(outcomes))
    if args.command == "build":
        print(f"\nbook: {opts.out / 'html' / 'index.html'} ({'rendered' if render_code == 0 else 'render FAILED'})")
    return 0 if runner.all_passed(outcomes) and render_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
