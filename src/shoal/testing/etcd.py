"""A throwaway single-member etcd for tests and benchmarks: a child process on free
ports, temp data; optionally serving clients over TLS (and requiring client
certificates)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from shoal.envoy import free_port

ETCD = shutil.which("etcd")
SKIP_REASON = "etcd-server is not installed (apt-get install etcd-server)"


@dataclass(frozen=True)
class ServerTls:
    """Client-port TLS: etcd's --cert-file/--key-file; with ``client_cert_auth`` also
    --client-cert-auth --trusted-ca-file=ca. The readiness probe trusts ``ca`` and shows
    ``probe_cert``/``probe_key`` (needed with client_cert_auth)."""

    ca: Path
    cert: Path
    key: Path
    client_cert_auth: bool = False
    probe_cert: Path | None = None
    probe_key: Path | None = None

    def args(self) -> list[str]:
        args = [f"--cert-file={self.cert}", f"--key-file={self.key}"]
        if self.client_cert_auth:
            args += ["--client-cert-auth", f"--trusted-ca-file={self.ca}"]
        return args

    def probe_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.probe_cert is not None and self.probe_key is not None:
            context.load_cert_chain(self.probe_cert, self.probe_key)
        return context


class EtcdServer:
    def __init__(
        self, data_dir: Path, *, tls: ServerTls | None = None, args: Sequence[str] = ()
    ) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.tls = tls
        self.args = list(args)  # further etcd flags, e.g. --auth-token-ttl=1
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.client_port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = data_dir.parent / f"{data_dir.name}.log"
        self._started = False  # has served once: a restart keeps its ports and data

    def start(self, timeout: float = 20.0) -> None:
        """Start etcd and wait until it serves. On a first start whose port another
        process took between ``free_port()`` and etcd's bind (ephemeral ports are shared
        with every outgoing connection on the machine), pick new ports and try again."""
        for _attempt in range(5):
            if self._launch(timeout) or self._started:
                return
            shutil.rmtree(self.data_dir, ignore_errors=True)  # never served: nothing lost
            self.client_port, self.peer_port = free_port(), free_port()
            scheme = "https" if self.tls is not None else "http"
            self.url = f"{scheme}://127.0.0.1:{self.client_port}"
        raise RuntimeError(f"etcd could not bind free ports: {self._log.read_text()[-2000:]}")

    def _launch(self, timeout: float) -> bool:
        """True once serving; False if a port was taken; raises on any other failure."""
        assert ETCD is not None, SKIP_REASON
        peer = f"http://127.0.0.1:{self.peer_port}"
        offset = self._log.stat().st_size if self._log.exists() else 0
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    ETCD,
                    "--name=test",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={self.url}",
                    f"--advertise-client-urls={self.url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=test={peer}",
                    "--heartbeat-interval=10",
                    "--election-timeout=100",
                    "--unsafe-no-fsync",
                    *(self.tls.args() if self.tls is not None else []),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        verify = self.tls.probe_context() if self.tls is not None else True
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                with self._log.open("rb") as f:
                    f.seek(offset)
                    said = f.read().decode(errors="replace")
                if "address already in use" in said and not self._started:
                    return False
                raise RuntimeError(f"etcd exited: {said[-2000:]}")
            try:
                r = httpx.post(self.url + "/v3/kv/range", json={"key": "AA=="}, timeout=1,
                               verify=verify)
                # serving; with auth enabled, an anonymous read is refused ("user name is
                # empty"), which also means etcd is up
                if r.status_code == 200 or "etcdserver:" in r.text:
                    self._started = True
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("etcd did not become ready")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
