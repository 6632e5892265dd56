"""Execute one notebook with papermill in a child process that the runner can stop.

The runner never executes a notebook in its own process: it starts ``python -m dynbook_lib.execution SPEC`` in a
session of its own (so a terminal's Ctrl-C reaches only the runner), forwards the child's progress lines (cell k of
n, with the kernel's start-up noise filtered out), and on Ctrl-C, SIGTERM or the execution timeout terminates the
child and everything it started (the kernel included): SIGTERM first, which the child turns into a clean shutdown of
its kernel, then SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import jupytext
import papermill
import psutil

ExitKind = Literal["ok", "error", "timed out", "interrupted"]

NOISE = (
    re.compile(r"Kernel is running over TCP without encryption"),
    re.compile(r"Message signing is disabled"),
    re.compile(r"Make sure that the kernel is only accessible"),
    re.compile(r"^\s*$"),
)
"""Lines of the child's output that say nothing to a reader (jupyter_client's warnings at every kernel start)."""

GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when stopping a chapter."""


@dataclass(frozen=True)
class NotebookJob:
    """What the child executes: a jupytext source, the parameters, where to write, and its limits."""

    source: str
    output: str
    parameters: dict
    cwd: str
    label: str
    cell_timeout_s: float
    progress_every_s: float = 10.0


@dataclass(frozen=True)
class ChildResult:
    kind: ExitKind
    error: str
    seconds: float


class _ProgressLines:
    """A file for tqdm that turns its in-place updates into whole lines, at most one every ``every`` seconds."""

    def __init__(self, stream, every: float):
        self.stream, self.every, self.last = stream, every, -float("inf")

    def write(self, text: str) -> None:
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r", "").strip()
        now = time.monotonic()
        if text and now - self.last >= self.every:
            self.last = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


def _first_line(err: BaseException) -> str:
    ename = getattr(err, "ename", None)
    evalue = getattr(err, "evalue", None)
    if ename:
        return f"{ename}: {evalue}".splitlines()[0]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop_when_orphaned(parent: int) -> None:
    """Interrupt this child (and so shut its kernel down) if the runner that started it disappears."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def child_main(argv: list[str]) -> int:
    """Entry point of the child: execute the job given as JSON in ``argv[0]``; write the error to ``argv[1]``."""
    job = NotebookJob(**json.loads(argv[0]))
    error_file = Path(argv[1])
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    bar = {"file": _ProgressLines(sys.stdout, job.progress_every_s), "ascii": True, "mininterval": 0,
           "bar_format": job.label + ": cell {n_fmt}/{total_fmt} [{elapsed}]"}
    try:
        papermill.execute_notebook(
            jupytext.read(job.source), job.output, parameters=job.parameters, kernel_name="python3", cwd=job.cwd,
            progress_bar=bar, log_output=False, execution_timeout=job.cell_timeout_s)
    except KeyboardInterrupt:
        error_file.write_text("interrupted")
        return 130
    except Exception as err:  # papermill's execution errors and anything around them
        error_file.write_text(_first_line(err))
        return 1
    return 0


def _tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_tree(proc: subprocess.Popen, grace: float = GRACE_S) -> None:
    """Stop ``proc`` and every process it started: SIGTERM to the child, SIGKILL to what is left after ``grace``."""
    family = _tree(proc.pid)
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def run_notebook(job: NotebookJob, env: dict[str, str], timeout_s: float, stop: threading.Event,
                 echo: Callable[[str], None] = print) -> ChildResult:
    """Execute ``job`` in a child process, forwarding its progress lines to ``echo``.

    Returns when the child ends, when ``timeout_s`` has passed (the child is stopped: ``"timed out"``) or when
    ``stop`` is set (by the runner's Ctrl-C/SIGTERM handler: ``"interrupted"``).
    """
    error_file = Path(job.output).with_suffix(".error.txt")
    error_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "dynbook_lib.execution", json.dumps(asdict(job)), str(error_file)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, text=True, bufsize=1)

    quiet = threading.Event()  # once the child is being stopped, its kernel's shutdown noise is not forwarded

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not quiet.is_set() and not any(p.search(line) for p in NOISE):
                echo("  " + line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    kind: ExitKind | None = None
    while proc.poll() is None:
        if stop.is_set():
            kind = "interrupted"
        elif time.monotonic() - start > timeout_s:
            kind = "timed out"
        if kind is not None:
            quiet.set()
            stop_tree(proc)
            break
        stop.wait(0.2)
    reader.join(timeout=5)
    seconds = time.monotonic() - start
    if kind == "timed out":
        error = f"stopped after the execution timeout of {timeout_s:.0f} s"
    elif kind == "interrupted" or proc.returncode == 130:
        kind, error = "interrupted", "stopped by Ctrl-C or SIGTERM"
    elif proc.returncode == 0:
        kind, error = "ok", ""
    else:
        kind = "error"
        error = error_file.read_text().strip() if error_file.exists() else f"the kernel process exited with {proc.returncode}"
    error_file.unlink(missing_ok=True)
    return ChildResult(kind, error, seconds)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
