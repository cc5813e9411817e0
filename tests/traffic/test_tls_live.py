"""TLS without the mesh terminating it, and gateways that terminate it with client
certificates -- real control plane, agents, gateway and Envoys.

* a gateway TCP server routes by VirtualService ``tcp`` (weighted over two subsets);
* a gateway TLS PASSTHROUGH server routes by SNI (``tls`` rules) to an app that
  terminates TLS itself with a certificate from a test CA;
* a gateway HTTPS server with tls MUTUAL requires client certificates from a CA given to
  ``shoal gateway run --credential NAME=CERT,KEY,CA`` (and ``subjectAltNames``);
* a sidecar's upstream port of a ``tls`` service routes by SNI (``tls`` rules);
* a gateway TLS AUTO_PASSTHROUGH server routes mesh mTLS by the SNI client sidecars
  send (``outbound_.<port>_.<subset>_.<fqdn>``) to the workload's sidecar, which
  terminates it: the test plays the client sidecar with an SVID from the control plane.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shoal.ca.csr import make_csr
from shoal.testing.local import AgentProcess, ControlPlaneProcess, _Process, free_port, wait_for
from shoal.testing.pki import TestCA
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
TLS_APP = [sys.executable, str(Path(__file__).with_name("tls_app.py"))]
WEB_SNI = "outbound_.8080_.{subset}_.web.default.svc.cluster.local"


@dataclass
class Mesh:
    cp: ControlPlaneProcess
    workdir: Path
    ca: TestCA
    ca_file: Path
    tcp_port: int
    tls_port: int
    https_port: int
    east_west_port: int
    istio_mutual_port: int
    client_info: dict


def config(m: Mesh) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: store}}
spec:
  host: store
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure}}
spec:
  host: secure
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web}}
spec:
  host: web
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  selector: {{istio: edge}}
  servers:
  - port: {{number: {m.tcp_port}, name: tcp, protocol: TCP}}
    hosts: ["*"]
  - port: {{number: {m.tls_port}, name: tls, protocol: TLS}}
    hosts: ["*.example.com"]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {m.https_port}, name: https, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls: {{mode: MUTUAL, credentialName: edge-cert}}
  - port: {{number: {m.https_port}, name: https-san, protocol: HTTPS}}
    hosts: [san.example.com]
    tls: {{mode: MUTUAL, credentialName: edge-cert, subjectAltNames: [good.client]}}
  - port: {{number: {m.east_west_port}, name: tls-mesh, protocol: TLS}}
    hosts: ["*.local"]
    tls: {{mode: AUTO_PASSTHROUGH}}
  - port: {{number: {m.istio_mutual_port}, name: https-mesh, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge-l4}}
spec:
  hosts: ["*.example.com"]
  gateways: [edge]
  tcp:
  - route:
    - {{destination: {{host: store, subset: v1}}, weight: 50}}
    - {{destination: {{host: store, subset: v2}}, weight: 50}}
  tls:
  - match: [{{sniHosts: [a.example.com]}}]
    route: [{{destination: {{host: secure, subset: v1}}}}]
  - match: [{{sniHosts: [b.example.com]}}]
    route: [{{destination: {{host: secure, subset: v2}}}}]
  http:
  - route: [{{destination: {{host: web}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure}}
spec:
  hosts: [secure]
  tls:
  - match: [{{sniHosts: [a.example.com]}}]
    route: [{{destination: {{host: secure, subset: v1}}}}]
  - match: [{{sniHosts: [b.example.com]}}]
    route: [{{destination: {{host: secure, subset: v2}}}}]
"""


SECURE_SERVICE = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: secure}
spec:
  selector: {app: secure}
  ports: [{name: tls, port: 8443, protocol: tls}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("tls")
    ca = TestCA("shoal tls test CA")
    ca_file = ca.write(workdir / "ca.pem")
    app_cert, app_key = ca.leaf("secure-app", dns=["a.example.com", "b.example.com"]).write(
        workdir, "secure-app")
    gw_cert, gw_key = ca.leaf("edge", dns=["mtls.example.com", "san.example.com"]).write(
        workdir, "edge")
    tls_env = {"CERT": str(app_cert), "KEY": str(app_key)}
    with ControlPlaneProcess(workdir, lease_ttl=6.0) as cp:
        with cp.client() as c:
            c.apply(SECURE_SERVICE)  # before its agents: they would register it as tcp
        agents = [
            AgentProcess(cp, service="store", port=9000, protocol="tcp", name=f"store-{v}",
                         labels={"version": v}, command=app_command("tcp"))
            for v in ("v1", "v2")
        ] + [
            AgentProcess(cp, service="secure", port=8443, protocol="tcp", name=f"secure-{v}",
                         labels={"version": v}, command=TLS_APP, env=tls_env,
                         extra=["--port-name", "tls"])
            for v in ("v1", "v2")
        ] + [
            AgentProcess(cp, service="web", port=8080, name="web-v1", labels={"version": "v1"},
                         command=app_command("http")),
        ]
        client = AgentProcess(cp, service="client", port=7000, name="client",
                              command=app_command("http"),
                              upstreams=[f"secure:8443={free_port()}"])
        agents.append(client)
        m = Mesh(cp, workdir, ca, ca_file, free_port(), free_port(), free_port(),
                 free_port(), free_port(), {})
        gw = _Process("gateway", workdir / "logs" / "gateway.log")
        try:
            for a in agents:
                a.start()
            ports = [m.tcp_port, m.tls_port, m.https_port, m.east_west_port,
                     m.istio_mutual_port]
            gw._spawn([sys.executable, "-m", "shoal", "gateway", "run", "--name", "edge",
                       "--workload", "edge-1", "--label", "istio=edge",
                       *[a for p in ports for a in ("--port", str(p))],
                       "--credential", f"edge-cert={gw_cert},{gw_key},{ca_file}",
                       "--control-plane", cp.agent_url, "--xds", cp.secure_xds,
                       "--ca-bundle", str(cp.ca_bundle),
                       "--token-file", str(cp.token_file("default", "edge")),
                       "--run-dir", str(workdir / "run" / "gw"), "--drain-seconds", "0.2",
                       "--lease-seconds", "6"],
                      {"SHOAL_LOG_LEVEL": os.environ.get("SHOAL_LOG_LEVEL", "info")})
            with cp.client() as c:
                c.apply(config(m))
            cp.wait_synced({a.name for a in agents} | {"edge-1"}, timeout=120)
            m.client_info = agent_info(client)
            # SYNCED can predate the last registration's push: wait until every server
            # and route answers as configured, then the tests assert without retrying
            wait_for(lambda: ready(m), 120, "every gateway server and SNI route")
            yield m
        finally:
            gw.stop()
            for a in agents:
                a.stop()


# -- clients ------------------------------------------------------------------------------

def _exchange(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    data = b""
    while not data.endswith(payload):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def tcp_call(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return _exchange(s, payload)


def tls_call(port: int, sni: str, ca_file: Path, payload: bytes = b"ping"
             ) -> tuple[bytes, x509.Certificate]:
    """TLS to 127.0.0.1:port with ``sni``, verifying the server against ``ca_file``;
    (reply, the server's certificate)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as s:
        der = s.getpeercert(binary_form=True)
        assert der is not None
        return _exchange(s, payload), x509.load_der_x509_certificate(der)


def https_get(port: int, host: str, ca_file: Path, client: tuple[Path, Path] | None = None
              ) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if client is not None:
        ctx.load_cert_chain(str(client[0]), str(client[1]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(f"GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return _parse_http(data)


def _parse_http(data: bytes) -> httpx.Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    if not lines or not lines[0].startswith("HTTP/1.1 "):
        raise ConnectionError(f"no HTTP response: {data[:200]!r}")
    headers = [tuple(x.split(": ", 1)) for x in lines[1:]]
    return httpx.Response(int(lines[0].split()[1]), headers=headers, content=body)


def refused(call) -> bool:  # type: ignore[no-untyped-def]
    """The call failed at the TLS handshake or the connection was closed on it."""
    try:
        call()
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return False


def ready(m: Mesh) -> bool:
    good = m.ca.leaf("ready-client", dns=["ready.client"]).write(m.workdir, "ready-client")
    upstream = m.client_info["upstreams"]["secure:8443"]
    svid = _svid(m.cp, m.workdir)
    return ({tcp_call(m.tcp_port).split(b":")[0] for _ in range(10)}
            == {b"store-v1", b"store-v2"}
            and tls_call(m.tls_port, "a.example.com", m.ca_file)[0].startswith(b"secure-v1:")
            and tls_call(m.tls_port, "b.example.com", m.ca_file)[0].startswith(b"secure-v2:")
            and tls_call(upstream, "a.example.com", m.ca_file)[0].startswith(b"secure-v1:")
            and tls_call(upstream, "b.example.com", m.ca_file)[0].startswith(b"secure-v2:")
            and https_get(m.https_port, "mtls.example.com", m.ca_file, good).status_code == 200
            and mesh_get(m, WEB_SNI.format(subset="v1"), svid)[0].status_code == 200
            and mesh_get(m, "web.example.com", svid, m.istio_mutual_port,
                         "web.example.com")[0].status_code == 200)


# -- gateway TCP and TLS passthrough --------------------------------------------------------

def test_gateway_tcp_server_splits_connections_by_weight(mesh: Mesh) -> None:
    wait_for(lambda: tcp_call(mesh.tcp_port).endswith(b":ping"), 60, "the TCP server")
    served = Counter(tcp_call(mesh.tcp_port).split(b":")[0].decode() for _ in range(30))
    assert set(served) == {"store-v1", "store-v2"}


def test_gateway_passes_tls_through_by_sni(mesh: Mesh) -> None:
    reply, cert = wait_for(lambda: tls_call(mesh.tls_port, "a.example.com", mesh.ca_file),
                           60, "the TLS passthrough server")
    # the certificate is the app's, from the test CA: the gateway did not terminate
    assert cert.issuer == mesh.ca.cert.subject
    assert cert.subject.rfc4514_string() == "CN=secure-app"
    assert reply == b"secure-v1:a.example.com:ping"
    for _ in range(5):
        assert tls_call(mesh.tls_port, "b.example.com", mesh.ca_file)[0] \
            == b"secure-v2:b.example.com:ping"
    # an SNI no rule names has no filter chain: the gateway closes the connection
    assert refused(lambda: tls_call(mesh.tls_port, "c.example.com", mesh.ca_file))


# -- gateway MUTUAL -------------------------------------------------------------------------

def test_gateway_mutual_requires_a_client_certificate_from_its_ca(mesh: Mesh) -> None:
    good = mesh.ca.leaf("good-client", dns=["good.client"]).write(mesh.workdir, "good-client")
    other = mesh.ca.leaf("other-client", dns=["other.client"]).write(mesh.workdir,
                                                                     "other-client")
    stranger = TestCA("another CA").leaf("stranger", dns=["good.client"]).write(
        mesh.workdir, "stranger")
    r = wait_for(lambda: https_get(mesh.https_port, "mtls.example.com", mesh.ca_file, good),
                 60, "the MUTUAL server")
    assert r.status_code == 200 and r.json()["served_by"] == "web-v1"
    assert refused(lambda: https_get(mesh.https_port, "mtls.example.com", mesh.ca_file))
    assert refused(lambda: https_get(mesh.https_port, "mtls.example.com", mesh.ca_file,
                                     stranger))
    # subjectAltNames: only good.client, even with a certificate from the right CA
    ok = https_get(mesh.https_port, "san.example.com", mesh.ca_file, good)
    assert ok.status_code == 200
    assert refused(lambda: https_get(mesh.https_port, "san.example.com", mesh.ca_file,
                                     other))


# -- sidecar SNI routes --------------------------------------------------------------------

def test_sidecar_routes_tls_by_sni_from_an_upstream_port(mesh: Mesh) -> None:
    port = mesh.client_info["upstreams"]["secure:8443"]
    wait_for(lambda: tls_call(port, "a.example.com", mesh.ca_file)[0]
             == b"secure-v1:a.example.com:ping", 60, "SNI a.example.com -> secure v1")
    for _ in range(5):
        assert tls_call(port, "a.example.com", mesh.ca_file)[0] \
            == b"secure-v1:a.example.com:ping"
        assert tls_call(port, "b.example.com", mesh.ca_file)[0] \
            == b"secure-v2:b.example.com:ping"
    # another SNI falls back to the service: either version (the app's cert names only
    # a. and b., so check the chain, not the name)
    ctx = ssl.create_default_context(cafile=str(mesh.ca_file))
    ctx.check_hostname = False
    served = set()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="other.example.org") as s:
            served.add(_exchange(s, b"x").split(b":")[0])
    assert served == {b"secure-v1", b"secure-v2"}


# -- AUTO_PASSTHROUGH (east-west) ------------------------------------------------------------

def _svid(cp: ControlPlaneProcess, directory: Path) -> tuple[Path, Path]:
    """A mesh certificate for default/tester, as an agent would get it."""
    key = ec.generate_private_key(ec.SECP256R1())
    token = cp.create_token("default", "tester")
    r = httpx.post(f"{cp.url}/api/v1/certificates", timeout=10,
                   headers={"Authorization": f"Bearer {token}"},
                   json={"csr": make_csr(key, "spiffe://cluster.local/ns/default/sa/tester"),
                         "workload": "tester"})
    r.raise_for_status()
    cert, key_path = directory / "tester.crt", directory / "tester.key"
    cert.write_text("".join(r.json()["certChain"]))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key_path


def mesh_get(m: Mesh, sni: str, svid: tuple[Path, Path] | None, port: int = 0,
             host: str = "web:8080") -> tuple[httpx.Response, x509.Certificate]:
    """What a client sidecar does: mTLS with its SVID and the mesh SNI, to the gateway
    (its AUTO_PASSTHROUGH server unless ``port`` says otherwise)."""
    ctx = ssl.create_default_context(cafile=str(m.cp.ca_bundle))
    ctx.check_hostname = False  # mesh certificates carry SPIFFE URIs, checked below
    ctx.set_alpn_protocols(["http/1.1"])
    if svid is not None:
        ctx.load_cert_chain(str(svid[0]), str(svid[1]))
    with socket.create_connection(("127.0.0.1", port or m.east_west_port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as s:
        der = s.getpeercert(binary_form=True)
        assert der is not None
        s.sendall(f"GET /east-west HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return _parse_http(data), x509.load_der_x509_certificate(der)


def _uri_sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)


def test_auto_passthrough_carries_mesh_mtls_to_the_workload(mesh: Mesh) -> None:
    svid = _svid(mesh.cp, mesh.workdir)
    r, cert = wait_for(lambda: mesh_get(mesh, WEB_SNI.format(subset=""), svid), 60,
                       "web through the AUTO_PASSTHROUGH server")
    assert r.status_code == 200 and r.json()["served_by"] == "web-v1"
    # the server certificate is web's own SVID: its sidecar terminated the mTLS
    assert _uri_sans(cert) == ["spiffe://cluster.local/ns/default/sa/web"]
    # ... and it saw the client's identity (the gateway is no party to the session)
    xfcc = {k.lower(): v for k, v in r.json()["headers"].items()}.get(
        "x-forwarded-client-cert", "")
    assert "spiffe://cluster.local/ns/default/sa/tester" in xfcc
    # a subset's SNI works too; without a mesh certificate the workload's sidecar refuses
    r2, _ = mesh_get(mesh, WEB_SNI.format(subset="v1"), svid)
    assert r2.json()["served_by"] == "web-v1"
    assert refused(lambda: mesh_get(mesh, WEB_SNI.format(subset=""), None))
    # an SNI that is no mesh service port has no chain
    assert refused(lambda: mesh_get(mesh, "outbound_.9999_._.web.default.svc.cluster.local",
                                    svid))


def test_gateway_istio_mutual_admits_mesh_clients_only(mesh: Mesh) -> None:
    svid = _svid(mesh.cp, mesh.workdir)
    r, cert = wait_for(lambda: mesh_get(mesh, "web.example.com", svid, mesh.istio_mutual_port,
                                        "web.example.com"), 60, "the ISTIO_MUTUAL server")
    assert r.status_code == 200 and r.json()["served_by"] == "web-v1"
    assert _uri_sans(cert) == ["spiffe://cluster.local/ns/default/sa/edge"]  # the gateway's
    assert refused(lambda: mesh_get(mesh, "web.example.com", None, mesh.istio_mutual_port))
