"""Where the jobs of a multi-seed run execute: this process, submitit's local pool, or a Slurm cluster.

A job is one (chapter, seed): :func:`run_job` executes it with :func:`dynbook_lib.runner.execute_chapter` into the
seed's own folder, so jobs never share a file and one job's failure never loses another's results. The scheduling
is submitit's (``LocalExecutor``, ``SlurmExecutor``); this module only keeps at most ``jobs`` of them running at once,
collects their outcomes, and stops them cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import psutil
import submitit

from dynbook_lib.chapters import Chapter
from dynbook_lib.core.results import read_results, write_json_atomic
from dynbook_lib.execution import GRACE_S
from dynbook_lib.runner import Outcome, RunOptions, execute_chapter, results_path, run_chapters, stop_on_signals

ExecutorName = Literal["inline", "local", "slurm"]
EXECUTORS: tuple[str, ...] = get_args(ExecutorName)
Job = tuple[Chapter, RunOptions]


def run_job(chapter: Chapter, opts: RunOptions, root: Path) -> Outcome:
    """One (chapter, seed) job, as submitit runs it in a process of its own."""
    stop = threading.Event()
    with stop_on_signals(stop):
        return execute_chapter(chapter, opts, root, stop)


def mark_interrupted(chapter: Chapter, opts: RunOptions) -> Outcome:
    """Finalise the results file of a job that was stopped before it could do so itself."""
    path = results_path(chapter, opts.out)
    res = read_results(path) or {"chapter": chapter.slug, "profile": opts.profile, "device": opts.device,
                                 "seed": opts.seed, "claims": [], "consistency": [], "metrics": {}}
    if res.get("status") not in ("passed", "failed", "crashed", "timed out"):
        res.update(status="interrupted", error="stopped by Ctrl-C or SIGTERM")
        write_json_atomic(path, res)
    claims = res.get("claims", [])
    held = sum(bool(c.get("holds")) for c in claims if c.get("required", True))
    return Outcome(chapter, float(res.get("seconds") or 0.0), held, len(claims), "interrupted",
                   "stopped by Ctrl-C or SIGTERM", seed=opts.seed)


@dataclass
class InlineExecutor:
    """Jobs from this process (the default): one :func:`run_chapters` per seed, ``jobs`` chapters at a time (one,
    the default, keeps timings honest), sharing one stop event, so an interrupt skips every job after it."""

    jobs: int = 1

    def run(self, jobs: Sequence[Job], root: Path) -> list[Outcome]:
        stop = threading.Event()
        by_seed: dict[RunOptions, list[Chapter]] = {}
        for chapter, opts in jobs:
            by_seed.setdefault(opts, []).append(chapter)
        return [o for opts, chapters in by_seed.items()
                for o in run_chapters(chapters, opts, root, stop=stop, jobs=self.jobs)]


def _family(job: submitit.Job) -> list[psutil.Process]:
    process = getattr(job, "_process", None)
    if process is None:
        return []
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class SubmititExecutor:
    """Jobs through a submitit executor, at most ``jobs`` at once (``None``: all submitted at once, for Slurm)."""

    executor: submitit.Executor
    jobs: int | None = 1
    poll_s: float = 1.0

    def submit(self, chapter: Chapter, opts: RunOptions, root: Path) -> submitit.Job:
        if isinstance(self.executor, submitit.SlurmExecutor):
            self.executor.update_parameters(job_name=f"dynbook-{chapter.slug}-seed{opts.seed}")
        return self.executor.submit(run_job, chapter, opts, root)

    def run(self, jobs: Sequence[Job], root: Path) -> list[Outcome]:
        pending = list(enumerate(jobs))
        running: dict[int, submitit.Job] = {}
        done: dict[int, Outcome] = {}
        stop = threading.Event()
        limit = self.jobs or len(jobs)
        with stop_on_signals(stop):
            while (pending or running) and not stop.is_set():
                while pending and len(running) < limit:
                    k, (chapter, opts) = pending.pop(0)
                    running[k] = self.submit(chapter, opts, root)
                    print(f"submitted {chapter.slug} seed {opts.seed} (job {running[k].job_id})", flush=True)
                for k, job in list(running.items()):
                    if job.done():
                        chapter, opts = jobs[k]
                        try:
                            done[k] = job.result()
                        except Exception as err:  # the job died outside the chapter: keep what it wrote
                            res = read_results(results_path(chapter, opts.out)) or {}
                            done[k] = Outcome(chapter, float(res.get("seconds") or 0.0), 0, len(chapter.claims),
                                              "crashed", f"job {job.job_id} failed: {str(err).strip().splitlines()[-1]}",
                                              seed=opts.seed)
                        del running[k]
                        print(f"{chapter.slug} seed {opts.seed}: {done[k].describe()} in {done[k].seconds:.1f} s",
                              flush=True)
                if running:
                    stop.wait(self.poll_s)
            if stop.is_set():
                self._stop(running)
                for k in running:
                    done[k] = mark_interrupted(*jobs[k])
                for k, (chapter, opts) in pending:
                    done[k] = Outcome.not_run(chapter, opts.seed)
        return [done[k] for k in sorted(done)]

    def _stop(self, running: dict[int, submitit.Job]) -> None:
        families = {k: _family(job) for k, job in running.items()}
        for job in running.values():
            try:
                job.cancel(check=False)
            except Exception:  # a job that already ended, or a cluster command that failed
                pass
        time.sleep(min(GRACE_S, 2.0))
        for family in families.values():
            for p in reversed(family):
                try:
                    p.terminate()
                except psutil.NoSuchProcess:
                    pass
        psutil.wait_procs([p for f in families.values() for p in f], timeout=GRACE_S)
        for family in families.values():
            for p in family:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass


@dataclass(frozen=True)
class SlurmOptions:
    """What each Slurm job asks for."""

    partition: str | None = None
    gpus_per_node: int = 0
    time_min: int = 60
    cpus_per_task: int = 4
    mem_gb: int | None = None


def make_executor(name: str, out: Path, *, jobs: int = 1, timeout_s: float = 1200.0,
                  slurm: SlurmOptions = SlurmOptions()) -> InlineExecutor | SubmititExecutor:
    """The executor called ``name`` (``inline``, ``local`` or ``slurm``), logging under ``out/submitit``."""
    if name == "inline":
        return InlineExecutor(jobs=jobs)
    folder = out / "submitit" / "%j"
    if name == "local":
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(timeout_min=math.ceil(timeout_s / 60) + 5)
        return SubmititExecutor(local, jobs=jobs)
    if name == "slurm":
        cluster = submitit.SlurmExecutor(folder=folder)
        params = {"time": slurm.time_min, "cpus_per_task": slurm.cpus_per_task}
        if slurm.partition:
            params["partition"] = slurm.partition
        if slurm.gpus_per_node:
            params["gpus_per_node"] = slurm.gpus_per_node
        if slurm.mem_gb:
            params["mem"] = f"{slurm.mem_gb}GB"
        cluster.update_parameters(**params)
        return SubmititExecutor(cluster, jobs=None, poll_s=30.0)
    raise ValueError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
