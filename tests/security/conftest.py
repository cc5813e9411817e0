"""Fixtures: a test PKI, JWT issuers and the scenario mesh running in two real Envoys
(web-1: the server sidecar; alice-1: a client sidecar), with secrets from a test SDS server."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import json_format

from shoal.registry.snapshot import MeshSnapshot
from shoal.testing.pki import JwtIssuer, TestCA
from shoal.testing.sds import running_sds_server, workload_secrets
from shoal.xds.generate import GenerationContext, generate
from tests.generate.conftest import proxy
from tests.generate.envoy_check import envoy_binary, static_bootstrap

from .scenario import ISSUER, scenario_mesh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _reply(self) -> None:
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in
                                                          self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_DELETE = do_POST = _reply

    def log_message(self, *args: object) -> None:
        pass


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@dataclass
class Env:
    ca: TestCA
    issuer: JwtIssuer
    mesh: MeshSnapshot
    ports: tuple[int, int, int, int]  # strict, permissive, disable, tcp (web-1)
    client_port: int  # alice-1's outbound HTTP proxy port
    certs: Path  # <name>.pem / <name>.key / root.pem

    def tls_context(self, who: str = "alice", root: str = "root.pem") -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cafile=str(self.certs / root))
        ctx.load_cert_chain(str(self.certs / f"{who}.pem"), str(self.certs / f"{who}.key"))
        return ctx


def _start_envoy(boot_path: Path, log_path: Path) -> subprocess.Popen:
    log = log_path.open("w")
    return subprocess.Popen(
        [str(envoy_binary()), "-c", str(boot_path), "--disable-hot-restart",
         "--concurrency", "1", "-l", "warning"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(check, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + 30
    while True:
        for p, log in zip(procs, logs, strict=True):
            assert p.poll() is None, log.read_text()[-3000:]
        try:
            if check():
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "sidecars did not become ready: " + "".join(
            log.read_text()[-2000:] for log in logs)
        time.sleep(0.1)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("security")
    ca, other_ca, issuer = TestCA("shoal test root"), TestCA("other root"), JwtIssuer(ISSUER)
    certs = tmp / "certs"
    certs.mkdir()
    (certs / "root.pem").write_bytes(ca.pem)
    secrets = {}
    for name, sa, signer in (("web", "web", ca), ("alice", "alice", ca), ("bob", "bob", ca),
                             ("mallory", "alice", other_ca)):
        leaf = signer.leaf(uris=[f"spiffe://cluster.local/ns/default/sa/{sa}"])
        leaf.write(certs, name)
        secrets[f"{name}-1.default"] = workload_secrets(leaf.cert_pem, leaf.key_pem, ca.pem)

    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TcpEcho)
    tcp.daemon_threads = True
    for server in (app, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = (free_port(), free_port(), free_port(), free_port())
    mesh = scenario_mesh(ports, issuer.jwks)
    ctx = GenerationContext(mesh)
    app_port, tcp_port = app.server_address[1], tcp.server_address[1]
    server_proxy = proxy("web-1", outbound_port=0, app_ports={
        "strict": app_port, "perm": app_port, "plain": app_port, "tcp": tcp_port})
    client_port = free_port()
    client_proxy = proxy("alice-1", outbound_port=client_port)

    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    with running_sds_server(secrets) as sds_port:
        try:
            for p in (server_proxy, client_proxy):
                boot = static_bootstrap(generate(ctx, p), p.node_id, sds_port)
                path = tmp / f"{p.node_id}.json"
                path.write_text(json_format.MessageToJson(boot))
                logs.append(tmp / f"{p.node_id}.log")
                procs.append(_start_envoy(path, logs[-1]))
            e = Env(ca, issuer, mesh, ports, client_port, certs)

            def ready() -> bool:
                from .test_envoy_security import get_mtls, get_plain, via_sidecar
                return (get_plain(ports[2], "/public")[0] == 200
                        and get_mtls(e, ports[0], "/public")[0] == 200
                        and via_sidecar(e, 9080, "/public")[0] == 200)

            _wait(ready, procs, logs)
            yield e
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=10)
            app.shutdown()
            tcp.shutdown()
