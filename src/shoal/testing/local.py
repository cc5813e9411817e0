"""Real shoal processes on this machine, for tests and benchmarks.

    with ControlPlaneProcess(tmp_path) as cp:
        with AgentProcess(cp, service="echo", port=8080, command=[...]) as agent:
            cp.client().apply(yaml_text)
            cp.wait_synced({agent.name})

Everything binds free loopback ports; ``stop`` leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from shoal.ca import pki
from shoal.ca.csr import make_csr
from shoal.cli.client import ApiClient
from shoal.cli.credentials import remember
from shoal.cli.rollout import RolloutFailed, wait_rollout
from shoal.envoy import free_port
from shoal.errors import Unavailable

T = TypeVar("T")




def wait_for(
    check: Callable[[], T], timeout: float = 30.0, what: str = "condition", interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # polling: any failure means "not yet"
            last = e
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}"
        + (f" (last error: {last!r})" if last else "")
    )


def operator_headers(data_dir: Path) -> dict[str, str]:
    """``Authorization`` for the operator API of the control plane whose data directory is
    DATA_DIR (its mesh-admin token file), or {} before it wrote one."""
    path = data_dir / "admin.token"
    return {"Authorization": f"Bearer {path.read_text().strip()}"} if path.exists() else {}


class _Process:
    def __init__(self, name: str, log: Path):
        self.name = name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ControlPlaneProcess(_Process):
    """`shoal control-plane` on free ports with its data in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        api_port: int | None = None,
        xds_port: int | None = None,
        lease_ttl: float = 15.0,
        store: str = "sqlite",
        secure: bool = True,
        cert_ttl: str = "24h",
        extra: Sequence[str] = (),
        agent_host: str = "127.0.0.1",
    ):
        """``secure``: tokens required for registration, and agents started with this
        control plane use its TLS listeners (REST + xDS) and get workload certificates.
        ``agent_host``: where the agent listeners (TLS REST, secure xDS) bind, e.g. a
        network's bridge address that pods reach (the operator API and the plaintext xDS
        port stay on loopback, docs/adr/0020)."""
        super().__init__("control-plane", workdir / "logs" / "control-plane.log")
        self.workdir = workdir
        self.api_port = api_port or free_port()
        self.xds_port = xds_port or free_port()
        self.agent_host = agent_host
        self.agent_api_port = free_port(agent_host)
        self.secure_xds_port = free_port(agent_host)
        self.lease_ttl = lease_ttl
        self.store = store
        self.secure = secure
        self.cert_ttl = cert_ttl
        self.extra = list(extra)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def xds(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    @property
    def agent_url(self) -> str:
        """The TLS REST listener for agents."""
        return f"https://{self.agent_host}:{self.agent_api_port}"

    @property
    def secure_xds(self) -> str:
        return f"{self.agent_host}:{self.secure_xds_port}"

    @property
    def ca_bundle(self) -> Path:
        """The trust bundle file the control plane writes (agents' --ca-bundle)."""
        return self.workdir / "data" / "ca" / "root-cert.pem"

    def create_token(self, namespace: str, service_account: str, ttl_seconds: float = 86400
                     ) -> str:
        with self.client() as c:
            return str(c.create_token(namespace, service_account, ttl_seconds)["token"])

    def token_file(self, namespace: str, service_account: str, ttl_seconds: float = 86400
                   ) -> Path:
        """A fresh token for NS/SA in a 0600 file under ``workdir/tokens``."""
        directory = self.workdir / "tokens"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{namespace}.{service_account}.{uuid.uuid4().hex[:6]}.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.create_token(namespace, service_account, ttl_seconds))
        return path

    def workload_certificate(self, namespace: str, service_account: str
                             ) -> tuple[bytes, bytes]:
        """(chain PEM, key PEM) of a genuine workload certificate for NAMESPACE/SA, as any
        holder of a token for it obtains one from the agent listener."""
        key = pki.new_key()
        tls = ssl.create_default_context(cafile=str(self.ca_bundle))
        spiffe = f"spiffe://cluster.local/ns/{namespace}/sa/{service_account}"
        token = self.create_token(namespace, service_account)
        r = httpx.post(f"{self.agent_url}/api/v1/certificates", verify=tls, timeout=10,
                       headers={"Authorization": f"Bearer {token}"},
                       json={"csr": make_csr(key, spiffe), "workload": service_account})
        r.raise_for_status()
        return "".join(r.json()["certChain"]).encode(), pki.key_pem(key)

    def client_tls(self, directory: Path, namespace: str | None = None,
                   service_account: str | None = None) -> ssl.SSLContext:
        """A client TLS context trusting the mesh; with NAMESPACE and SERVICE_ACCOUNT, also
        presenting a genuine workload certificate for them (files kept in DIRECTORY)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        if namespace is None or service_account is None:
            return ctx
        chain, key = self.workload_certificate(namespace, service_account)
        cert = directory / f"{namespace}-{service_account}.pem"
        key_file = directory / f"{namespace}-{service_account}.key"
        cert.write_bytes(chain)
        key_file.write_bytes(key)
        key_file.chmod(0o600)
        ctx.load_cert_chain(cert, key_file)
        return ctx

    def start(self, timeout: float = 30.0) -> ControlPlaneProcess:
        self._spawn(
            [
                sys.executable,
                "-m",
                "shoal",
                "control-plane",
                "--api",
                f"127.0.0.1:{self.api_port}",
                "--xds",
                self.xds,
                "--data-dir",
                str(self.workdir / "data"),
                "--store",
                self.store,
                "--lease-ttl",
                str(self.lease_ttl),
                "--agent-api",
                f"{self.agent_host}:{self.agent_api_port}",
                "--secure-xds",
                self.secure_xds,
                "--cert-ttl",
                self.cert_ttl,
                "--require-tokens" if self.secure else "--no-require-tokens",
                *self.extra,
            ]
        )
        try:
            wait_for(lambda: self.client().ready(), timeout, "the control plane to be ready")
        except TimeoutError:
            self.stop()
            raise Unavailable(f"control plane did not start:\n{self.log_text()[-3000:]}") from None
        remember(self.url, self.admin_token_path)  # `shoal -c URL ...` finds its credential
        return self

    def restart(self, *, kill: bool = False) -> ControlPlaneProcess:
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    @property
    def admin_token_path(self) -> Path:
        """The cluster-admin credential the control plane writes for its operator."""
        return self.workdir / "data" / "admin.token"

    @property
    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` for the operator API (mesh admin), once the file exists."""
        return operator_headers(self.workdir / "data")

    def client(self) -> ApiClient:
        """A CLI client of the operator API acting as the cluster admin."""
        return ApiClient(self.url, headers=self.auth_headers)

    def http(self, **kw: Any) -> httpx.Client:
        """An httpx client for raw calls to the operator API, as the cluster admin."""
        return httpx.Client(base_url=self.url, headers=self.auth_headers,
                            timeout=kw.pop("timeout", 10.0), **kw)

    def proxies(self) -> list[dict[str, Any]]:
        with self.client() as c:
            return c.proxies()

    def wait_synced(self, workloads: set[str], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Until a connected proxy of each named workload is SYNCED with the config of the
        store as it was once they were all connected (so with each other's endpoints),
        not merely with whatever it was last sent. Returns those proxies' status."""
        try:
            with self.client() as c:
                return wait_rollout(c, workloads=workloads, timeout=timeout).proxies
        except (Unavailable, RolloutFailed) as e:
            raise TimeoutError(f"proxies of {sorted(workloads)} not SYNCED: {e}\n"
                               f"{self.sync_report(workloads)}") from None

    def sync_report(self, workloads: set[str]) -> str:
        """Why these workloads are not SYNCED: each one's proxy state (types behind, NACK
        messages) and the tail of its agent's log (``workdir/logs/NAME.log``)."""
        try:
            proxies = self.proxies()
        except Exception as e:  # the report must not hide the timeout
            return f"(proxy status unavailable: {e!r})\n" + self.log_text()[-2000:]
        lines: list[str] = []
        for w in sorted(workloads):
            mine = [p for p in proxies if p.get("workload") == w]
            if any(p.get("sync") == "SYNCED" and p.get("connected", True) for p in mine):
                continue
            if not mine:
                lines.append(f"{w}: no proxy connected")
            for p in mine:
                lines.append(f"{w}: node {p.get('node_id')} {p.get('sync')} "
                             f"connected={p.get('connected')} snapshot={p.get('snapshot_version')}")
                for t in p.get("types", []):
                    if t.get("nack") or t.get("acked_version") != t.get("want_version"):
                        lines.append(f"    {t.get('type')}: want {t.get('want_version')} sent "
                                     f"{t.get('sent_version')} acked {t.get('acked_version')} "
                                     f"nack {t.get('nack')}")
            log = self.workdir / "logs" / f"{w}.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-25:]
                lines += [f"    | {line}" for line in tail]
        return "\n".join(lines)

    def __enter__(self) -> ControlPlaneProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gateway_process(cp: ControlPlaneProcess, work: Path, name: str, workload: str,
                    ports: Sequence[int], *, namespace: str = "default",
                    extra: Sequence[str] = (), prefix: Sequence[str] = ()) -> _Process:
    """``shoal gateway run --name NAME`` against ``cp``, started (``stop()`` it): may bind
    ``ports``; its token is for service account NAME; ``extra``: more options (labels,
    credentials, ``--address``); ``prefix``: a command to run it under."""
    gw = _Process(f"gateway-{workload}", work / "logs" / f"gateway-{workload}.log")
    gw._spawn([*prefix, sys.executable, "-m", "shoal", "gateway", "run", "--name", name,
               "--namespace", namespace, "--workload", workload,
               *(a for p in ports for a in ("--port", str(p))), *extra,
               "--control-plane", cp.agent_url, "--xds", cp.secure_xds,
               "--ca-bundle", str(cp.ca_bundle),
               "--token-file", str(cp.token_file(namespace, name)),
               "--run-dir", str(work / "run" / workload), "--drain-seconds", "0.2",
               "--lease-seconds", "6"],
              {"SHOAL_LOG_LEVEL": os.environ.get("SHOAL_LOG_LEVEL", "info")})
    return gw


class AgentProcess(_Process):
    """`shoal run` for one workload (the agent starts Envoy and the command)."""

    def __init__(
        self,
        cp: ControlPlaneProcess,
        *,
        service: str,
        port: int,
        command: Sequence[str],
        labels: dict[str, str] | None = None,
        protocol: str = "http",
        name: str | None = None,
        app_port: int | None = None,
        inbound_port: int | None = None,
        upstreams: Sequence[str] = (),
        extra: Sequence[str] = (),
        drain_seconds: float = 0.5,
        env: dict[str, str] | None = None,
        namespace: str = "default",
        service_account: str | None = None,
        secure: bool | None = None,
        token_file: Path | None = None,
        also: Sequence[ControlPlaneProcess] = (),
        wrap: Sequence[str] = (),
    ):
        """``secure`` (default: ``cp.secure``): mint a token for NAMESPACE/SERVICE_ACCOUNT
        (unless ``token_file`` is given) and talk to the control plane over TLS.
        ``also``: further instances of the same (HA) control plane; the agent is given
        all of them (``--control-plane URL,URL --xds H:P,H:P``), ``cp`` first.
        ``wrap``: a command prefix, e.g. ``ip netns exec NS`` to run in a pod."""
        name = name or f"{service}-{uuid.uuid4().hex[:5]}"
        super().__init__(name, cp.workdir / "logs" / f"{name}.log")
        self.cp = cp
        self.app_port = app_port or free_port()
        self.env = env
        self.namespace = namespace
        self.service_account = service_account or service
        self.secure = cp.secure if secure is None else secure
        self.token_file = token_file
        self.control_planes = [cp, *also]
        self.wrap = list(wrap)
        argv = [
            sys.executable,
            "-m",
            "shoal",
            "run",
            "--service",
            service,
            "--port",
            str(port),
            "--protocol",
            protocol,
            "--name",
            name,
            "--app-port",
            str(self.app_port),
            "--namespace",
            namespace,
            "--service-account",
            self.service_account,
            "--run-dir",
            str(cp.workdir / "run" / name),
            "--drain-seconds",
            str(drain_seconds),
            "--lease-seconds",
            "6",
        ]
        for k, v in (labels or {}).items():
            argv += ["--label", f"{k}={v}"]
        if inbound_port:
            argv += ["--inbound-port", str(inbound_port)]
        for u in upstreams:
            argv += ["--upstream", u]
        self._extra = list(extra)
        self._command = list(command)
        self.argv = argv

    @property
    def run_dir(self) -> Path:
        return self.cp.workdir / "run" / self.name

    def start(self) -> AgentProcess:
        argv = list(self.argv)
        if self.secure:
            if self.token_file is None:
                self.token_file = self.cp.token_file(self.namespace, self.service_account)
            argv += ["--control-plane", ",".join(c.agent_url for c in self.control_planes),
                     "--xds", ",".join(c.secure_xds for c in self.control_planes),
                     "--ca-bundle", str(self.cp.ca_bundle), "--token-file", str(self.token_file)]
        else:
            argv += ["--control-plane", ",".join(c.url for c in self.control_planes),
                     "--xds", ",".join(c.xds for c in self.control_planes)]
            if self.token_file is not None:
                argv += ["--token-file", str(self.token_file)]
        self._spawn([*self.wrap, *argv, *self._extra, "--", *self._command], self.env)
        return self

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
