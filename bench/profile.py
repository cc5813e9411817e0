"""Optional sampling profile of the control plane with py-spy (``--profile``).

py-spy is not a project dependency: install it (``pip install py-spy``) or point
``$PY_SPY`` at its binary. The collapsed-stack output is summarised as shoal's functions
with the most samples (inclusive) and the frames on top of the stack ("self").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


class Profiler:
    def __init__(self, pid: int, out: Path) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy, or set $PY_SPY)")
        self.out = out
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
             "--full-filenames", "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summarize(raw: Path, top: int = 15) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(total samples, top inclusive frames, top self frames) from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        if frames and "(idle)" in frames[-1]:
            continue
        total += n
        for f in set(frames):
            if _ours(f):
                inclusive[f] += n
        if frames:
            self_time[frames[-1]] += n
    return total, inclusive.most_common(top), self_time.most_common(top)


def _ours(frame: str) -> bool:
    """shoal's own frames below the process entry point (the useful inclusive view)."""
    return "(shoal/" in frame and not frame.startswith(("main (", "control_plane (", "<module> ("))


def _frame(text: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = text.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/src/shoal/" in file:
        file = "shoal/" + file.split("/src/shoal/", 1)[1]
    elif "/lib/python3" in file:
        file = file.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{name} ({file})"
