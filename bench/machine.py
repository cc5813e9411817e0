"""What machine a benchmark ran on, and the process counters we sample (/proc)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import dataclass


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu_model()}), {mem_gb:.0f} GB RAM, {platform.platform()}"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class ProcStat:
    rss_mb: float  # VmRSS
    hwm_mb: float  # VmHWM (peak RSS)
    cpu_s: float  # utime + stime


def proc_stat(pid: int) -> ProcStat:
    """Memory from /proc/<pid>/status, CPU seconds from /proc/<pid>/stat."""
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(rest.split()[0]) / 1024
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # the command name may hold spaces: fields after the closing parenthesis
    after = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(after[11]) + int(after[12])) / ticks  # utime, stime (fields 14, 15)
    return ProcStat(fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0), cpu)


def procs_stat(pids: list[int]) -> ProcStat:
    """Summed over ``pids`` (several control-plane instances): RSS, CPU, and VmHWM as the
    sum of each one's peak (an upper bound of their peak together)."""
    stats = [proc_stat(pid) for pid in pids]
    return ProcStat(sum(s.rss_mb for s in stats), sum(s.hwm_mb for s in stats),
                    sum(s.cpu_s for s in stats))
