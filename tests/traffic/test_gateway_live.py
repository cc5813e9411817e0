"""An ingress gateway (``shoal gateway run``) in front of the demo's product page.

productpage, details, reviews v1 and ratings run with sidecars (mesh mTLS); the gateway
gets its listeners from a Gateway and its routes from a VirtualService, over HTTP and over
HTTPS with a certificate made here.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoal.demo.topology import WORKLOADS
from shoal.errors import NotFound
from shoal.testing.local import (
    AgentProcess,
    ControlPlaneProcess,
    _Process,
    free_port,
    gateway_process,
    wait_for,
)

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
HOST = "bookinfo.example.com"
DEMO = ("productpage-v1", "details-v1", "reviews-v1", "ratings-v1")


def make_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "gw.crt", directory / "gw.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


MESH_CONFIG = """extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: [x-ext-authz]
    headersToDownstreamOnDeny: [x-ext-authz-check-result]
"""


# Istio's rate-limit sample (an EnvoyFilter) sends the gateway's checks to a STRICT_DNS
# cluster at ratelimit.default.svc.cluster.local:8081. As root, the gateway runs in a
# mount namespace whose /etc/hosts gives that name a loopback address of its own, where
# the test runs shoal's rate-limit service with the descriptors of Istio's task.
RL_HOST = "ratelimit.default.svc.cluster.local"
RL_ADDRESS = "127.0.81.81"
RL_PORT = 8081  # fixed by the sample
RL_DESCRIPTORS = """domain: productpage-ratelimit
descriptors:
- key: PATH
  value: /productpage
  rate_limit: {unit: minute, requests_per_unit: 1}
- key: PATH
  rate_limit: {unit: minute, requests_per_unit: 100}
"""
BOOKINFO = Path(__file__).resolve().parents[3] / "shared" / "istio-upstream" / "samples" \
    / "bookinfo"


def resolving_ratelimit(workdir: Path) -> list[str]:
    """A command prefix: a private mount namespace with RL_HOST in its /etc/hosts (root
    only; otherwise nothing, and the rate-limit sample test is skipped)."""
    if os.geteuid() != 0:
        return []
    hosts = workdir / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n{RL_ADDRESS} {RL_HOST}\n")
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)]


def config(http_port: int, https_port: int) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: {https_port}, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, credentialName: bookinfo-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo}}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{{uri: {{exact: /productpage}}}}, {{uri: {{prefix: /api/v1/products}}}}]
    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[int, int, Path, ControlPlaneProcess]]:
    workdir = tmp_path_factory.mktemp("gateway")
    cert, key = make_cert(workdir)
    http_port, https_port = free_port(), free_port()
    bookinfo = (Path(__file__).resolve().parents[2] / "src" / "shoal" / "demo"
                / "bookinfo.yaml").read_text()
    (workdir / "mesh.yaml").write_text(MESH_CONFIG)
    with ControlPlaneProcess(workdir, lease_ttl=6.0,
                             extra=["--mesh-config", str(workdir / "mesh.yaml")]) as cp:
        agents = [AgentProcess(cp, service=w.service, port=w.port, name=w.name,
                               labels={"version": w.version}, command=list(w.command),
                               env=dict(w.env)) for w in WORKLOADS if w.name in DEMO]
        agents.append(AgentProcess(cp, service="ext-authz", port=8000, name="ext-authz",
                                   command=[sys.executable, "-m", "shoal.demo.ext_authz",
                                            "http"]))
        gw = None
        try:
            for a in agents:
                a.start()
            gw = gateway_process(
                cp, workdir, "ingress", "ingress-1", [http_port],
                extra=["--label", "istio=ingressgateway", "--https-port", str(https_port),
                       "--cert", str(cert), "--key", str(key),
                       "--credential-name", "bookinfo-cert"],
                prefix=resolving_ratelimit(workdir))
            with cp.client() as c:
                c.apply(bookinfo)
                c.apply(config(http_port, https_port))
            cp.wait_synced({*DEMO, "ext-authz", "ingress-1"})
            yield http_port, https_port, cert, cp
        finally:
            if gw is not None:
                gw.stop()
            for a in agents:
                a.stop()


def test_http_through_the_gateway_serves_the_product_page(gateway) -> None:
    http_port, _, _, _ = gateway
    url = f"http://127.0.0.1:{http_port}/productpage"
    r = wait_for(lambda: (r := httpx.get(url, timeout=10)).status_code == 200 and r, 30,
                 "the product page through the gateway")
    assert "<html" in r.text.lower()
    # productpage answering does not mean reviews is reachable yet (its sidecar may still
    # be getting its first config): wait for it as well
    api = f"http://127.0.0.1:{http_port}/api/v1/products/0/reviews"
    reviews = wait_for(lambda: (r := httpx.get(api, timeout=10)).status_code == 200 and r,
                       60, "reviews through the gateway")
    assert reviews.json()["served_by"] == "reviews-v1"
    # routes are authoritative: an unmatched path gets 404 from the gateway
    assert httpx.get(f"http://127.0.0.1:{http_port}/nope", timeout=10).status_code == 404


def test_https_terminates_tls_with_the_users_certificate(gateway) -> None:
    _, https_port, cert, _ = gateway
    ctx = ssl.create_default_context(cafile=str(cert))
    transport = httpx.HTTPTransport(verify=ctx)

    def get() -> httpx.Response:
        # connect to 127.0.0.1 but present SNI/Host bookinfo.example.com
        with httpx.Client(transport=transport, timeout=10) as c:
            return c.get(f"https://{HOST}:{https_port}/productpage",
                         extensions={"sni_hostname": HOST})

    import socket
    real = socket.getaddrinfo

    def fake(host, *a, **kw):  # type: ignore[no-untyped-def]
        return real("127.0.0.1" if host == HOST else host, *a, **kw)

    socket.getaddrinfo = fake
    try:
        r = wait_for(lambda: (r := get()).status_code == 200 and r, 30, "HTTPS page")
    finally:
        socket.getaddrinfo = real
    assert "<html" in r.text.lower()


def _policies(jwks: str) -> str:
    """Istio's "JWT at the ingress gateway" task: a RequestAuthentication and a DENY policy
    for requests without a request principal, both selecting the ingress gateway from the
    root namespace; plus a DENY of one path in the gateway's own namespace."""
    return f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: ingress-jwt, namespace: shoal-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: frontend-ingress, namespace: shoal-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: DENY
  rules:
  - from: [{{source: {{notRequestPrincipals: ["*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-reviews-api}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/api/v1/products*"]}}}}]
"""


def test_policies_selecting_the_gateway_are_enforced(gateway) -> None:
    """Issue 11 part 4: RequestAuthentication and AuthorizationPolicy (DENY here) that
    select the ingress gateway apply at the gateway, exactly as on a sidecar."""
    from shoal.testing.pki import JwtIssuer

    http_port, _, _, cp = gateway
    url = f"http://127.0.0.1:{http_port}/productpage"
    issuer = JwtIssuer("testing@secure.istio.io")
    other = JwtIssuer("testing@secure.istio.io", kid="k1")  # same name, other key
    good = {"Authorization": f"Bearer {issuer.token('user-1')}"}
    with cp.client() as c:
        c.apply(_policies(issuer.jwks))
    try:
        # no token: denied by the DENY policy (403); an invalid token: 401 from jwt_authn
        wait_for(lambda: httpx.get(url, timeout=10).status_code == 403, 30,
                 "the gateway to deny requests without a token")
        bad = httpx.get(url, timeout=10,
                        headers={"Authorization": f"Bearer {other.token('user-1')}"})
        assert bad.status_code == 401
        assert httpx.get(url, timeout=10, headers=good).status_code == 200
        # a DENY on a path, in the gateway's own namespace
        api = f"http://127.0.0.1:{http_port}/api/v1/products/0/reviews"
        assert httpx.get(api, timeout=10, headers=good).status_code == 403
    finally:
        with cp.client() as c:
            for kind, ns, name in (("RequestAuthentication", "shoal-system", "ingress-jwt"),
                                   ("AuthorizationPolicy", "shoal-system", "frontend-ingress"),
                                   ("AuthorizationPolicy", "default", "no-reviews-api")):
                c.delete(kind, ns, name)
    wait_for(lambda: httpx.get(url, timeout=10).status_code == 200, 30,
             "the product page without a token once the policies are gone")


def test_custom_policy_at_the_gateway_asks_the_external_authorizer(gateway) -> None:
    """Istio's external-authorization task at the ingress gateway (docs/adr/0033): a
    CUSTOM policy selecting the gateway sends its requests to the authorizer."""
    from shoal.demo.ext_authz import DENIED_BODY, RESULT_HEADER

    http_port, _, _, cp = gateway
    url = f"http://127.0.0.1:{http_port}/productpage"
    with cp.client() as c:
        c.apply("""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-ingress}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules: [{to: [{operation: {paths: [/productpage]}}]}]
""")
    try:
        denied = wait_for(lambda: (r := httpx.get(url, timeout=10)).status_code == 403 and r,
                          30, "the gateway to ask the authorizer")
        assert denied.text == DENIED_BODY and denied.headers[RESULT_HEADER] == "denied"
        assert httpx.get(url, timeout=10, headers={"x-ext-authz": "allow"}).status_code == 200
        # not selected by the policy: never sent to the authorizer
        assert httpx.get(f"http://127.0.0.1:{http_port}/api/v1/products",
                         timeout=10).status_code == 200
    finally:
        with cp.client() as c:
            c.delete("AuthorizationPolicy", "default", "ext-authz-ingress")
    wait_for(lambda: httpx.get(url, timeout=10).status_code == 200, 30,
             "the product page without the check once the policy is gone")


def test_istios_rate_limit_sample_limits_requests_at_the_gateway(gateway) -> None:
    """Istio's samples/bookinfo/policy/productpage_envoy_ratelimit.yaml, unchanged
    (docs/adr/0034): its EnvoyFilters put Envoy's rate-limit filter on the ingress
    gateway, talking to a global rate-limit service (shoal's, with the descriptors of
    Istio's task): /productpage gets 1 request a minute, other paths 100."""
    if os.geteuid() != 0:
        pytest.skip("needs root for the gateway's private /etc/hosts")
    with socket.socket() as probe:
        # as the service binds it: connections of an earlier run in TIME_WAIT do not count
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((RL_ADDRESS, RL_PORT))
        except OSError as e:
            pytest.skip(f"{RL_ADDRESS}:{RL_PORT} is taken: {e}")
    http_port, _, _, cp = gateway
    workdir = cp.workdir
    (workdir / "descriptors.yaml").write_text(RL_DESCRIPTORS)
    rls = _Process("ratelimit", workdir / "logs" / "ratelimit.log")
    rls._spawn([sys.executable, "-m", "shoal", "ratelimit", "serve", "--insecure-plaintext",
                "--descriptors", str(workdir / "descriptors.yaml"), "--host", RL_ADDRESS,
                "--port", str(RL_PORT), "--http-port", str(free_port()),
                "--control-plane", cp.url])
    sample = (BOOKINFO / "policy" / "productpage_envoy_ratelimit.yaml").read_text()
    page = f"http://127.0.0.1:{http_port}/productpage"
    api = f"http://127.0.0.1:{http_port}/api/v1/products"
    try:
        with cp.client() as c:
            c.apply(sample)
        # the filter is in once a request is limited; a minute's window may roll over
        # between two requests, so within a few quick ones at least one is refused
        wait_for(lambda: any(httpx.get(page, timeout=10).status_code == 429
                             for _ in range(3)), 60, "a rate-limited /productpage")
        codes = [httpx.get(page, timeout=10).status_code for _ in range(3)]
        assert 429 in codes and set(codes) <= {200, 429}, codes
        limited = next(r for r in (httpx.get(page, timeout=10) for _ in range(3))
                       if r.status_code == 429)
        assert limited.headers.get("x-envoy-ratelimited") == "true"
        assert all(httpx.get(api, timeout=10).status_code == 200 for _ in range(5))
    finally:
        rls.stop()
        with cp.client() as c, contextlib.suppress(NotFound):
            for name in ("filter-ratelimit", "filter-ratelimit-svc"):
                c.delete("EnvoyFilter", "istio-system", name)
    wait_for(lambda: all(httpx.get(page, timeout=10).status_code == 200 for _ in range(3)),
             60, "no limit once the EnvoyFilters are gone")


def test_the_gateway_api_sample_serves_the_product_page(gateway, tmp_path: Path) -> None:
    """samples/gateway-api/bookinfo-gateway.yaml (a Gateway API Gateway and HTTPRoute for
    the demo) served by `shoal gateway run --name bookinfo-gateway`, as its comment says
    (on a free port here instead of 8080)."""
    *_, cp = gateway
    port = free_port()
    sample = (Path(__file__).resolve().parents[2] / "samples" / "gateway-api"
              / "bookinfo-gateway.yaml").read_text().replace("port: 8080", f"port: {port}")
    gw = gateway_process(cp, tmp_path, "bookinfo-gateway", "bookinfo-gw-1", [port])
    try:
        with cp.client() as c:
            c.apply(sample)
        url = f"http://127.0.0.1:{port}/productpage"
        r = wait_for(lambda: (r := httpx.get(url, timeout=10)).status_code == 200 and r, 60,
                     "the product page through the Gateway API gateway")
        assert "<html" in r.text.lower()
        assert httpx.get(f"http://127.0.0.1:{port}/nope", timeout=10).status_code == 404
    finally:
        gw.stop()
        with cp.client() as c:
            for kind, name in (("gtw", "bookinfo-gateway"), ("HTTPRoute", "bookinfo")):
                c.delete(kind, "default", name)
