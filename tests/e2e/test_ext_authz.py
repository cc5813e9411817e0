"""AuthorizationPolicy action CUSTOM (docs/adr/0033) through the real control plane,
agents and Envoys, against a real external authorizer process (shoal.demo.ext_authz, the
counterpart of Istio's sample): over HTTP and over gRPC, allowed and denied, headers
passed back as the provider says, requests the policy does not select never checked, and
with the authorizer down: fail closed (the default) and fail open."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.demo.ext_authz import DENIED_BODY, RESULT_HEADER
from shoal.testing.local import AgentProcess, ControlPlaneProcess, free_port, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"

MESH_CONFIG = """\
# Istio's MeshConfig, as in its external-authorization task
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz-http.default.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz-grpc.default.svc.cluster.local
    port: 9000
- name: open-when-down
  envoyExtAuthzGrpc:
    service: ext-authz-grpc.default.svc.cluster.local
    port: 9000
    timeout: 2s
    failOpen: true
"""


def policy(provider: str) -> str:
    """Istio's task policy: only requests to /headers* are checked."""
    return f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext-authz, namespace: default}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: CUSTOM
  provider: {{name: {provider}}}
  rules:
  - to: [{{operation: {{paths: ["/headers*"]}}}}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    work: Path = tmp_path_factory.mktemp("extauthz")
    (work / "mesh.yaml").write_text(MESH_CONFIG)
    authorizer = [sys.executable, "-m", "shoal.demo.ext_authz"]
    with ControlPlaneProcess(work, lease_ttl=6.0,
                             extra=["--mesh-config", str(work / "mesh.yaml")]) as cp:
        agents = {
            "web": AgentProcess(cp, service="web", port=8080, name="web",
                                command=app_command("http")),
            "frontend": AgentProcess(cp, service="frontend", port=7000, name="frontend",
                                     command=app_command("http"),
                                     upstreams=[f"store:9000={free_port()}"]),
            "intruder": AgentProcess(cp, service="intruder", port=7001, name="intruder",
                                     command=app_command("http"),
                                     upstreams=[f"store:9000={free_port()}"]),
            "store": AgentProcess(cp, service="store", port=9000, protocol="tcp",
                                  name="store", command=app_command("tcp")),
            "authz-http": AgentProcess(cp, service="ext-authz-http", port=8000,
                                       name="authz-http", command=[*authorizer, "http"]),
            "authz-grpc": AgentProcess(cp, service="ext-authz-grpc", port=9000,
                                       protocol="grpc", name="authz-grpc",
                                       command=[*authorizer, "grpc"],
                                       env={"EXT_AUTHZ_ALLOWED_PRINCIPALS": FRONTEND}),
        }
        try:
            for a in agents.values():
                a.start()
            cp.wait_synced(set(agents))
            yield cp, agents, {n: agent_info(a) for n, a in agents.items()}
        finally:
            for a in agents.values():
                a.stop()


def call(info: dict[str, Any], path: str, headers: dict[str, str] | None = None
         ) -> httpx.Response:
    with httpx.Client(proxy=f"http://127.0.0.1:{info['outboundPort']}", timeout=10) as http:
        return http.get(f"http://web:8080{path}", headers=headers)


def seen_by_app(resp: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.json()["headers"].items()}


def use(cp: ControlPlaneProcess, provider: str) -> None:
    with cp.client() as c:
        c.apply(policy(provider))


def denied(info: dict[str, Any]) -> httpx.Response | None:
    r = call(info["frontend"], "/headers")
    return r if r.status_code == 403 else None


@pytest.mark.parametrize("provider", ["sample-ext-authz-http", "sample-ext-authz-grpc"])
def test_the_authorizer_decides_what_the_policy_selects(mesh, provider: str) -> None:
    cp, _, info = mesh
    use(cp, provider)
    resp = wait_for(lambda: (r := denied(info)) is not None
                    and r.headers.get(RESULT_HEADER) == "denied" and r, 30,
                    f"{provider} to deny /headers without x-ext-authz")
    assert resp.text == DENIED_BODY
    ok = call(info["frontend"], "/headers", {"x-ext-authz": "allow"})
    assert ok.status_code == 200
    assert seen_by_app(ok)[RESULT_HEADER] == "allowed"  # passed on to the upstream
    # a request the policy does not select is never sent to the authorizer
    other = call(info["frontend"], "/other")
    assert other.status_code == 200 and RESULT_HEADER not in seen_by_app(other)


def tcp_echo(info: dict[str, Any]) -> bytes | None:
    """One exchange with the store over the caller's upstream port; None if refused."""
    [port] = info["upstreams"].values()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"ping")
            data = s.recv(4096)
            return data or None
    except OSError:
        return None


def test_tcp_connections_are_checked_by_the_grpc_authorizer(mesh) -> None:
    """A TCP port: each connection goes to the gRPC authorizer with the caller's verified
    identity (the sample allows the frontend only)."""
    cp, _, info = mesh
    with cp.client() as c:
        c.apply("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: store-ext-authz, namespace: default}
spec:
  selector: {matchLabels: {app: store}}
  action: CUSTOM
  provider: {name: sample-ext-authz-grpc}
  rules: [{}]
""")
    try:
        wait_for(lambda: tcp_echo(info["intruder"]) is None, 30,
                 "the intruder's connection to be refused by the authorizer")
        assert (tcp_echo(info["frontend"]) or b"").endswith(b"ping")
    finally:
        with cp.client() as c:
            c.delete("AuthorizationPolicy", "default", "store-ext-authz")


def test_authorizer_down_fails_closed_unless_the_provider_fails_open(mesh) -> None:
    cp, agents, info = mesh
    use(cp, "sample-ext-authz-grpc")
    wait_for(lambda: denied(info), 30, "the gRPC authorizer's policy to apply")
    agents["authz-grpc"].stop()
    # down: the check fails, so the selected request is refused (403), not let through
    wait_for(lambda: (r := denied(info)) is not None and RESULT_HEADER not in r.headers,
             60, "a refusal without the authorizer's answer")
    assert call(info["frontend"], "/headers",
                {"x-ext-authz": "allow"}).status_code == 403
    assert call(info["frontend"], "/other").status_code == 200
    use(cp, "open-when-down")
    wait_for(lambda: call(info["frontend"], "/headers").status_code == 200, 60,
             "the fail-open provider to let requests through")


def test_an_unknown_provider_fails_closed_and_analyze_says_why(mesh) -> None:
    cp, _, info = mesh
    use(cp, "nobody")
    wait_for(lambda: denied(info), 30, "requests selected for an unknown provider denied")
    assert call(info["frontend"], "/other").status_code == 200
    env = {**os.environ, "SHOAL_CONTROL_PLANE": cp.url}
    out = subprocess.run([sys.executable, "-m", "shoal", "analyze"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "provider 'nobody' is not in the mesh config's extensionProviders" in out.stdout
    assert "[provider-unavailable]" in out.stdout
    # shoal authz check says the answer is the authorizer's
    check = subprocess.run([sys.executable, "-m", "shoal", "authz", "check", "--to", "web",
                            "--from", "frontend", "--path", "/headers", "-o", "json"],
                           env=env, capture_output=True, text=True)
    [verdict] = json.loads(check.stdout)
    assert verdict["external"] == "nobody", check.stdout + check.stderr
