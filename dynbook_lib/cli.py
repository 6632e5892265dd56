"""The ``dynbook`` command: ``dynbook run`` executes chapters, ``dynbook build`` also renders the book."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dynbook_lib import __version__, runner
from dynbook_lib.chapters import BY_SLUG, get_chapter, written_chapters
from dynbook_lib.core.devices import DEVICES, resolve_device
from dynbook_lib.core.claims import evaluate
from dynbook_lib.core.profiles import PROFILES
from dynbook_lib.core.registry import register
from dynbook_lib.core.seeding import check_seed
from dynbook_lib.executors import EXECUTORS, SlurmOptions, make_executor


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"dynbook: error: {message}\n")


def _seed(text: str) -> int:
    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer in [0, 2**63), got {text!r}") from None


def parse_seeds(items: list[str]) -> list[int]:
    """Seeds from ``0-4``, ``0 1 2`` or ``0,1,2`` (and mixtures), in order, without repeats; ``ValueError`` (one
    line) for anything else.

    Example:
        >>> parse_seeds(["0-2", "7"]), parse_seeds(["1,3"])
        ([0, 1, 2, 7], [1, 3])
    """
    seeds: list[int] = []
    for item in (part for text in items for part in text.split(",") if part):
        low, sep, high = item.partition("-")
        try:
            a = check_seed(int(low))
            b = check_seed(int(high)) if sep else a
        except ValueError:
            raise ValueError(f"--seeds: {item!r} is not a seed or a range; write e.g. 0-4 or 0 1 2") from None
        if b < a:
            raise ValueError(f"--seeds: the range {item} is empty; write LOW-HIGH with LOW <= HIGH, e.g. 0-4")
        seeds += [s for s in range(a, b + 1) if s not in seeds]
    if not seeds:
        raise ValueError("--seeds: give at least one seed, e.g. 0-4")
    return seeds


def _positive(what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--timeout must be a positive number of seconds, got {text!r}")
    return value


EPILOG = "exit status:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in runner.EXIT_CODES.items())


def make_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="dynbook", description="Execute and render the dynbook chapters.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dynbook {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_OneLineParser, metavar="COMMAND")
    for name, help_text in (("run", "execute chapters and write their results"),
                            ("build", "execute what is not up to date, then render the HTML book")):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("chapters", nargs="*", metavar="CHAPTER",
                       help=f"slug, number or file stem (e.g. diagonal-networks, 08); default: all written: "
                            f"{', '.join(BY_SLUG)}")
        p.add_argument("--profile", default="fast", choices=PROFILES, help="problem sizes (default: fast)")
        p.add_argument("--device", default="auto", choices=DEVICES, help="auto picks CUDA when present (default: auto)")
        p.add_argument("--seed", default=0, type=_seed, help="seed of the run (default: 0)")
        p.add_argument("--out", default=Path("_build"), type=Path, help="output folder (default: _build)")
        p.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                       help="execution timeout per chapter in seconds (default: 1200 fast, 10800 full)")
        p.add_argument("--threads", type=_positive("--threads"), default=None, metavar="N",
                       help="torch/OpenMP threads of each chapter's kernel (default: torch's own choice)")
        p.add_argument("--jobs", type=_positive("--jobs"), default=1, metavar="N",
                       help="chapters executing at once, each in its own process (default: 1, so timings stay "
                            "honest); with N > 1 and no --threads, each gets CPUs/N threads")
        if name == "run":
            p.add_argument("--seeds", nargs="+", default=None, metavar="SEEDS",
                           help="run every chapter at each seed (0-4, or 0 1 2) into OUT/seed-N and write "
                                "OUT/robustness.json")
            p.add_argument("--executor", default="inline", choices=EXECUTORS,
                           help="where the jobs of --seeds run: inline (processes of this one, --jobs at once), "
                                "local (submitit's local pool, --jobs at once) or slurm (one job per chapter and "
                                "seed, all at once)")
            p.add_argument("--slurm-partition", default=None, metavar="NAME", help="Slurm partition")
            p.add_argument("--slurm-gpus", type=int, default=0, metavar="N", help="GPUs per Slurm job (default: 0)")
            p.add_argument("--slurm-time", type=_positive("--slurm-time"), default=60, metavar="MIN",
                           help="time limit of each Slurm job in minutes (default: 60)")
            p.add_argument("--slurm-cpus", type=_positive("--slurm-cpus"), default=4, metavar="N",
                           help="CPUs per Slurm job (default: 4)")
    reg_help = ("copy the full-profile results of OUT/results into the registry results/full/ (each checked: schema, "
                "profile full, run to its table, device named)")
    reg = sub.add_parser("register", help=reg_help, description=reg_help)
    reg.add_argument("out", type=Path, metavar="OUT", help="output folder of a full-profile run or build")
    reg.add_argument("--registry", type=Path, default=None, metavar="DIR",
                     help="registry folder (default: results/full in the repository, or $DYNBOOK_REGISTRY)")
    return parser


def check_against_specification(results: dict) -> None:
    """Raise ``ValueError`` (one line) unless ``results`` is of a known chapter, records every claim and check of its
    specification, and each ``holds`` follows from the recorded value, operator and threshold."""
    slug = results.get("chapter")
    if slug not in BY_SLUG:
        raise ValueError(f"unknown chapter {slug!r}; chapters are: {', '.join(BY_SLUG)}")
    chapter = BY_SLUG[slug]
    recorded = {c.get("name"): c for c in [*results.get("claims", []), *results.get("consistency", [])]}
    missing = [n for n in chapter.recorded_names if n not in recorded]
    if missing:
        raise ValueError(f"{slug}: claims or checks of the specification not recorded: {', '.join(missing)}")
    for name, c in recorded.items():
        value = c.get("value")
        if value is not None and bool(c.get("holds")) != evaluate(value, c.get("op"), c.get("threshold")):
            raise ValueError(f"{slug}: {name} says holds={c.get('holds')} but {value} {c.get('op')} "
                             f"{c.get('threshold')} says otherwise")


def register_command(out: Path, registry: Path | None) -> int:
    """``dynbook register OUT``: every full-profile results file of ``OUT/results`` into the registry."""
    files = sorted((out / "results").glob("*.json"))
    if not files:
        print(f"dynbook: error: no results files in {out / 'results'}", file=sys.stderr)
        return 2
    code = 0
    for path in files:
        try:
            check_against_specification(runner.read_results(path) or {})
            print(f"registered {path.name} -> {register(path, registry)}")
        except ValueError as err:
            print(f"skipped {path.name}: {str(err).splitlines()[0]}", file=sys.stderr)
            code = 1
    return code


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "register":
        return register_command(args.out, args.registry)
    seeds = None
    try:
        if args.command == "run" and args.seeds is not None:
            seeds = parse_seeds(args.seeds)
        if args.command == "run" and args.jobs > 1 and args.executor == "slurm":
            raise ValueError(f"--jobs {args.jobs} does not apply to --executor slurm (it submits every job at once); "
                             "use it with inline or local")
        if args.command == "run" and args.executor != "inline" and seeds is None:
            seeds = [args.seed]
        root = runner.find_root()
        written = written_chapters(root)
        chapters = list(dict.fromkeys(get_chapter(name) for name in args.chapters)) or written
        for chapter in chapters:
            if chapter not in written:
                raise ValueError(f"chapter {chapter.slug!r} is not written yet; written chapters: "
                                 f"{', '.join(c.slug for c in written) or 'none'}")
        if not (args.command == "run" and args.executor == "slurm"):
            resolve_device(args.device)  # a Slurm job checks CUDA where it runs
        runner.check_output_folder(args.out)
        executor = None
        if seeds is not None:
            timeout = args.timeout or runner.DEFAULT_TIMEOUT_S[args.profile]
            executor = make_executor(args.executor, args.out.resolve(), jobs=args.jobs, timeout_s=timeout,
                                     slurm=SlurmOptions(args.slurm_partition, args.slurm_gpus, args.slurm_time,
                                                        args.slurm_cpus))
    except (ValueError, RuntimeError) as err:
        print(f"dynbook: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    threads = args.threads
    if threads is None and args.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        print(f"{args.jobs} chapters at once, {threads} thread{'s' * (threads > 1)} each (--threads to change)",
              flush=True)
    opts = runner.RunOptions(args.profile, args.device, args.seed, args.out.resolve(), args.timeout, threads)
    render_code = 0
    if seeds is not None:
        outcomes = runner.run_seeds(chapters, opts, root, seeds, executor)
    elif args.command == "run":
        outcomes = runner.run_chapters(chapters, opts, root, jobs=args.jobs)
    else:
        outcomes, render_code = runner.build_book(chapters, opts, root, jobs=args.jobs)
    print()
    print(runner.summary_table(outcomes))
    if seeds is not None and len(seeds) > 0:
        robustness = opts.out / "robustness.json"
        doc = runner.read_results(robustness)
        if doc:
            print(f"\nclaims over seeds {', '.join(map(str, seeds))} ({robustness}):\n")
            print(runner.robustness_table(doc))
    if args.command == "build" and not any(o.status in ("interrupted", "not run") for o in outcomes):
        print(f"\nbook: {opts.out / 'html' / 'index.html'} ({'rendered' if render_code == 0 else 'render FAILED'})")
    return runner.exit_code(outcomes, render_code)


if __name__ == "__main__":
    sys.exit(main())
