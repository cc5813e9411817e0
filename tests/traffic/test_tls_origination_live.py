"""TLS origination against real Envoy: the app speaks plain HTTP to an external host, its
sidecar speaks TLS (DestinationRule tls SIMPLE / MUTUAL) to HTTPS servers outside the mesh.

The servers are Python ``ssl`` servers on loopback with certificates from a test CA; they
answer with what they saw of the TLS connection (SNI, client certificate). Certificate
files are read by the client's agent and served to its Envoy over SDS.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from shoal.testing.pki import TestCA
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

HOSTS = ["secure.external.test", "mtls.external.test", "late.external.test"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        conn: ssl.SSLSocket = self.connection  # type: ignore[assignment]
        peer = conn.getpeercert()
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        body = json.dumps({"tls": conn.version(), "sni": getattr(conn, "sni", None),
                           "client_cn": subject.get("commonName"),
                           "host": self.headers.get("host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _TLSServer(ThreadingHTTPServer):
    """HTTPS with the handshake in the handler's thread; records the SNI on the socket."""

    def __init__(self, ctx: ssl.SSLContext):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ctx = ctx

        def sni(sock: ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
            sock.sni = name  # type: ignore[attr-defined]
        ctx.sni_callback = sni  # type: ignore[assignment]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError):
            return  # e.g. no client certificate where one is required
        super().finish_request(request, client_address)


def _server(ca_file: Path, cert: Any, require_client: bool) -> _TLSServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert, cert.key)
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca_file)
    server = _TLSServer(ctx)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca = TestCA("good CA")
    return {"dir": d, "ca": ca.write(d / "good-ca.pem"),
            "wrong": TestCA("wrong CA").write(d / "wrong-ca.pem"),
            "server": ca.leaf("external server", dns=HOSTS, client=False).write(d, "server"),
            # the client's key in the agent's --tls-key-dir; the others are outside it
            "client": ca.leaf("shoal-client", server=False).write(d / "keys", "client")}


@pytest.fixture(scope="module")
def servers(pki: dict[str, Any]) -> Iterator[dict[str, int]]:
    simple = _server(pki["ca"], pki["server"], require_client=False)
    mutual = _server(pki["ca"], pki["server"], require_client=True)
    yield {"simple": simple.server_port, "mutual": mutual.server_port}
    simple.shutdown()
    mutual.shutdown()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Any]
         ) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("origination")
    with ControlPlaneProcess(workdir, lease_ttl=6.0) as cp:
        client = AgentProcess(cp, service="client", port=8080, name="client",
                              command=app_command("http"),
                              extra=["--tls-key-dir", str(pki["dir"] / "keys")])
        try:
            client.start()
            cp.wait_synced({"client"})
            yield {"cp": cp, "agent": client, "info": agent_info(client)}
        finally:
            client.stop()


def entry(host: str, port: int) -> str:
    """The app calls http://<host>/ (port 80, plain HTTP); the server listens on ``port``."""
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host.split('.')[0]}}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  endpoints: [{{address: 127.0.0.1}}]
"""


def rule(host: str, tls: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host.split('.')[0]}}}
spec:
  host: {host}
  trafficPolicy:
    tls: {tls}
"""


def apply(mesh: dict[str, Any], text: str) -> None:
    with mesh["cp"].client() as c:
        c.apply(text)


def http(mesh: dict[str, Any]) -> httpx.Client:
    port = mesh["info"]["outboundPort"]
    return httpx.Client(proxy=f"http://127.0.0.1:{port}", timeout=15, trust_env=False)


def ssl_stat(mesh: dict[str, Any], cluster: str, name: str) -> int:
    admin = mesh["info"]["adminPort"]
    text = httpx.get(f"http://127.0.0.1:{admin}/stats?filter=ssl", timeout=10).text
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == f"cluster.{cluster}.ssl.{name}":
            return int(value)
    return 0


def client_status(mesh: dict[str, Any]) -> dict[str, Any]:
    [status] = [p for p in mesh["cp"].proxies()
                if p.get("workload") == "client" and p.get("connected", True)]
    return status


def assert_acked(mesh: dict[str, Any]) -> None:
    """Envoy took the config: SYNCED, no NACK of any type."""
    status = wait_for(lambda: (s := client_status(mesh))["sync"] == "SYNCED" and s, 60,
                      "the client proxy to be SYNCED")
    assert all(t["nack"] is None for t in status["types"]), status


def test_simple_originates_tls_with_the_host_as_sni(mesh, servers, pki) -> None:
    apply(mesh, entry("secure.external.test", servers["simple"]))
    apply(mesh, rule("secure.external.test",
                     f"{{mode: SIMPLE, caCertificates: {pki['ca']}}}"))
    with http(mesh) as h:
        r = wait_for(lambda: (r := h.get("http://secure.external.test/")).status_code == 200
                     and r, 60, "TLS origination to secure.external.test")
    seen = r.json()
    assert seen["tls"] in ("TLSv1.2", "TLSv1.3")
    assert seen["sni"] == "secure.external.test"
    assert seen["client_cn"] is None  # SIMPLE: no client certificate
    assert seen["host"] == "secure.external.test"
    assert_acked(mesh)


def test_wrong_ca_fails_the_request_not_the_config(mesh, servers, pki) -> None:
    apply(mesh, entry("secure.external.test", servers["simple"]))
    apply(mesh, rule("secure.external.test",
                     f"{{mode: SIMPLE, caCertificates: {pki['wrong']}}}"))
    with http(mesh) as h:
        r = wait_for(lambda: (r := h.get("http://secure.external.test/")).status_code == 503
                     and r, 60, "the server certificate to be refused")
    assert "upstream connect error" in r.text, r.text
    # Envoy says why: the server's certificate did not verify against the CA given
    assert ssl_stat(mesh, "outbound|80||secure.external.test", "fail_verify_error") > 0
    assert_acked(mesh)  # a bad CA is the request's problem, never a NACK
    apply(mesh, rule("secure.external.test",
                     f"{{mode: SIMPLE, caCertificates: {pki['ca']}}}"))
    with http(mesh) as h:
        wait_for(lambda: h.get("http://secure.external.test/").status_code == 200, 60,
                 "the right CA to work again")


def test_mutual_presents_the_client_certificate(mesh, servers, pki) -> None:
    apply(mesh, entry("mtls.external.test", servers["mutual"]))
    ca = pki["ca"]
    apply(mesh, rule("mtls.external.test", f"{{mode: SIMPLE, caCertificates: {ca}}}"))
    with http(mesh) as h:
        # the server requires a client certificate: SIMPLE cannot get through
        wait_for(lambda: h.get("http://mtls.external.test/").status_code == 503, 60,
                 "SIMPLE to be refused by a server that wants a client certificate")
        client = pki["client"]
        apply(mesh, rule("mtls.external.test", f"""
      mode: MUTUAL
      clientCertificate: {client.cert}
      privateKey: {client.key}
      caCertificates: {ca}"""))
        r = wait_for(lambda: (r := h.get("http://mtls.external.test/")).status_code == 200
                     and r, 60, "MUTUAL to be accepted")
    seen = r.json()
    assert seen["client_cn"] == "shoal-client"
    assert seen["sni"] == "mtls.external.test"
    assert_acked(mesh)


def test_a_key_outside_the_agents_key_directories_is_not_presented(mesh, servers, pki
                                                                    ) -> None:
    """Whoever may apply a DestinationRule cannot make the sidecar present some other key
    found on its host: the server's own pair (valid, but outside --tls-key-dir) is refused
    by the agent, the request fails, and nothing is NACKed."""
    apply(mesh, entry("stolen.external.test", servers["mutual"]))
    server = pki["server"]
    apply(mesh, rule("stolen.external.test", f"""
      mode: MUTUAL
      clientCertificate: {server.cert}
      privateKey: {server.key}
      caCertificates: {pki['ca']}"""))
    agent: AgentProcess = mesh["agent"]
    wait_for(lambda: "outside the directories this agent reads TLS keys from"
             in agent.log_text(), 60, "the agent to refuse the key")
    assert f"clientCertificate {server.cert}" in agent.log_text()
    assert_acked(mesh)
    with http(mesh) as h:
        assert h.get("http://stolen.external.test/").status_code == 503


def test_a_missing_certificate_file_waits_for_the_file(mesh, servers, pki) -> None:
    later = Path(pki["dir"]) / "later" / "ca.pem"
    apply(mesh, entry("late.external.test", servers["simple"]))
    apply(mesh, rule("late.external.test", f"{{mode: SIMPLE, caCertificates: {later}}}"))
    agent: AgentProcess = mesh["agent"]
    wait_for(lambda: str(later) in agent.log_text(), 60,
             "the agent to report the missing file")
    assert "cannot serve file secret" in agent.log_text()
    assert_acked(mesh)  # the cluster waits for its secret; nothing is NACKed
    with http(mesh) as h:
        assert h.get("http://late.external.test/").status_code != 200
        later.parent.mkdir(parents=True, exist_ok=True)
        later.write_bytes(pki["ca"].read_bytes())  # the operator installs it
        r = wait_for(lambda: (r := h.get("http://late.external.test/")).status_code == 200
                     and r, 60, "the cluster to use the file once it exists")
    assert r.json()["sni"] == "late.external.test"
