"""Processes started by `shoal up`, and how `shoal down` stops every one of them.

Each started process (control plane, agents) is a session leader with its log in
``$SHOAL_HOME/logs``. The agents start Envoy and the applications themselves; all of
them inherit an environment marker (``SHOAL_UP_SESSION``), so `down` can find and stop
any descendant even if its agent died without cleaning up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

MARKER = "SHOAL_UP_SESSION"


@dataclass
class Started:
    name: str
    pid: int
    log: str
    argv: list[str]


@dataclass
class UpState:
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    processes: list[Started] = field(default_factory=list)
    api: str = ""
    product_page: str = ""


class LocalProcesses:
    def __init__(self, home: Path):
        self.home = home
        self.state_file = home / "up.json"
        self.logs = home / "logs"

    def load(self) -> UpState | None:
        if not self.state_file.exists():
            return None
        data = json.loads(self.state_file.read_text())
        procs = [Started(**p) for p in data.pop("processes", [])]
        return UpState(processes=procs, **data)

    def save(self, state: UpState) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(state), indent=2))

    def spawn(self, state: UpState, name: str, argv: Sequence[str],
              env: dict[str, str] | None = None) -> Started:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        full_env = {**os.environ, **(env or {}), MARKER: state.session}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=full_env,
                                    start_new_session=True)
        started = Started(name, proc.pid, str(log_path), list(argv))
        state.processes.append(started)
        self.save(state)
        return started

    def stop(self, state: UpState, *, timeout: float = 15.0) -> list[str]:
        """Stop agents first (they drain and deregister), then the control plane, then
        anything left carrying the session marker. Returns what was stopped."""
        stopped = []
        agents = [p for p in state.processes if p.name != "control-plane"]
        planes = [p for p in state.processes if p.name == "control-plane"]
        for group in (agents, planes):
            for p in group:
                if _alive(p.pid):
                    _signal(p.pid, signal.SIGTERM)
                    stopped.append(p.name)
            _wait_gone([p.pid for p in group], timeout)
            for p in group:
                if _alive(p.pid):
                    _signal(p.pid, signal.SIGKILL)
        leftovers = marked_processes(state.session)
        for pid in leftovers:
            _signal(pid, signal.SIGTERM)
        _wait_gone(leftovers, 5.0)
        for pid in marked_processes(state.session):
            _signal(pid, signal.SIGKILL)
        if self.state_file.exists():
            self.state_file.unlink()
        return stopped


def marked_processes(session: str) -> list[int]:
    """PIDs of live processes whose environment carries this session's marker."""
    needle = f"{MARKER}={session}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0") and _alive(int(entry.name)):
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pids: Sequence[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
