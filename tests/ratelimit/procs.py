"""Processes the rate-limit tests run: `shoal ratelimit serve` and a throwaway redis."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from shoal.cli.credentials import token_for
from shoal.testing.local import ControlPlaneProcess, free_port, wait_for


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class RateLimitProcess:
    """`shoal ratelimit serve` on free ports, following a control plane.

    With ``cp`` and ``identity`` (NAMESPACE, SERVICE_ACCOUNT) it runs with a mesh identity
    of its own, as in production: a workload token for it, the control plane's CA bundle
    and agent listener; gRPC is then mTLS and answers mesh identities only. Otherwise it
    runs ``--insecure-plaintext`` (development). ``/stats`` is read as the cluster admin
    of ``cp`` (``headers`` without one)."""

    def __init__(self, workdir: Path, control_plane: str, *, redis: str | None = None,
                 port: int | None = None, name: str = "ratelimit",
                 cp: ControlPlaneProcess | None = None,
                 identity: tuple[str, str] | None = None,
                 headers: dict[str, str] | None = None):
        self.workdir = workdir
        self.control_plane = control_plane
        self.redis = redis
        self.port = port or free_port()
        self.http_port = free_port()
        self.log = workdir / "logs" / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cp = cp
        self.identity = identity
        self.token_file: Path | None = None
        self.headers = headers

    @property
    def spiffe_id(self) -> str | None:
        if self.identity is None:
            return None
        ns, sa = self.identity
        return f"spiffe://cluster.local/ns/{ns}/sa/{sa}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> RateLimitProcess:
        argv = [sys.executable, "-m", "shoal", "ratelimit", "serve", "--control-plane",
                self.control_plane, "--port", str(self.port), "--http-port",
                str(self.http_port), "--state-dir", str(self.workdir / "ratelimit")]
        if self.redis:
            argv += ["--redis", self.redis]
        if self.identity is not None:
            assert self.cp is not None, "an identity needs the control plane that issues it"
            if self.token_file is None:
                self.token_file = self.cp.token_file(*self.identity)
            argv += ["--agent-api", self.cp.agent_url, "--token-file", str(self.token_file),
                     "--ca-bundle", str(self.cp.ca_bundle)]
        else:
            argv.append("--insecure-plaintext")
        self.proc = _spawn(argv, self.log)
        wait_for(lambda: self._ready(), 30, "the rate-limit service to be ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"rate-limit service exited:\n{self.log.read_text()[-2000:]}")
        try:
            return bool(httpx.get(self.url + "/healthz", timeout=2).json()["ready"])
        except httpx.HTTPError:
            return False

    def auth_headers(self) -> dict[str, str]:
        if self.headers is not None:
            return self.headers
        if self.cp is not None:
            return self.cp.auth_headers
        token = token_for(self.control_plane)  # as `ControlPlaneProcess.start` remembered
        return {"Authorization": f"Bearer {token}"} if token else {}

    def stats(self) -> dict[str, int]:
        r = httpx.get(self.url + "/stats", timeout=5, headers=self.auth_headers())
        return dict(r.raise_for_status().json())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.proc, sig)


class RedisProcess:
    """redis-server on a free port in a temp dir (no persistence unless asked)."""

    def __init__(self, workdir: Path, *, persist: bool = False):
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> RedisProcess:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--appendonly",
                "yes" if self.persist else "no"]
        self.proc = _spawn(argv, self.dir / "redis.log")
        import redis

        client = redis.Redis(port=self.port)
        wait_for(lambda: _ping(client), 15, "redis")
        client.close()
        return self

    def stop(self) -> None:
        _stop(self.proc)


def _ping(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


__all__ = ["RateLimitProcess", "RedisProcess"]
