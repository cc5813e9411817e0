"""Zero trust through the real control plane, agents and Envoys: every call is mTLS with
workload identities from shoal's CA, policies apply on the next requests, certificates
rotate under load without a failed request, and `shoal authz check` agrees with Envoy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
SPIFFE = "spiffe://cluster.local/ns/default/sa/"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    # Leaves live one minute and are renewed at 10 % of that: a rotation every ~6 s.
    with ControlPlaneProcess(tmp_path_factory.mktemp("zt"), lease_ttl=6.0,
                             cert_ttl="1m") as cp:
        renew = ["--renew-fraction", "0.1"]
        agents = {
            "web": AgentProcess(cp, service="web", port=8080, name="web",
                                command=app_command("http"), extra=renew),
            "frontend": AgentProcess(cp, service="frontend", port=7000, name="frontend",
                                     command=app_command("http"), extra=renew),
            "intruder": AgentProcess(cp, service="intruder", port=7001, name="intruder",
                                     command=app_command("http")),
        }
        try:
            for a in agents.values():
                a.start()
            cp.wait_synced(set(agents))
            yield cp, {n: agent_info(a) for n, a in agents.items()}
        finally:
            for a in agents.values():
                a.stop()


def call(info: dict[str, Any], url: str = "http://web:8080/") -> httpx.Response:
    with httpx.Client(proxy=f"http://127.0.0.1:{info['outboundPort']}", timeout=5) as http:
        return http.get(url)


def apply(cp: ControlPlaneProcess, text: str) -> None:
    with cp.client() as c:
        c.apply(text)


def test_calls_are_mutual_tls_and_the_app_sees_its_callers_identity(mesh) -> None:
    _, info = mesh
    resp = wait_for(lambda: (r := call(info["frontend"])).status_code == 200 and r, 20,
                    "frontend -> web")
    xfcc = {k.lower(): v for k, v in resp.json()["headers"].items()}["x-forwarded-client-cert"]
    assert f"URI={SPIFFE}frontend" in xfcc
    assert f"By={SPIFFE}web" in xfcc


def test_strict_refuses_plaintext_but_the_mesh_keeps_working(mesh) -> None:
    cp, info = mesh
    apply(cp, """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web-strict, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
""")
    wait_for(lambda: plaintext_refused(info["web"]), 20,
             "plaintext to web's sidecar to be refused")
    assert call(info["frontend"]).status_code == 200


def plaintext_refused(agent: dict[str, Any]) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{agent['inboundPort']}/", timeout=2)
    except httpx.HTTPError:
        return True
    return False


def test_istios_mesh_wide_strict_file_works_unchanged(mesh) -> None:
    """Istio's mesh-wide STRICT, in Istio's root namespace (docs/adr/0032), refuses
    plaintext on every sidecar, not only web's; mesh calls keep working."""
    cp, info = mesh
    policy = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""
    assert not plaintext_refused(info["frontend"])  # PERMISSIVE until now
    apply(cp, policy)
    try:
        wait_for(lambda: plaintext_refused(info["frontend"]), 20,
                 "plaintext to frontend's sidecar to be refused")
        assert call(info["frontend"]).status_code == 200
    finally:
        with cp.client() as c:
            c.delete("PeerAuthentication", "istio-system", "default")


def test_allow_policy_admits_one_caller_and_denies_another(mesh) -> None:
    cp, info = mesh
    apply(cp, f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: web-allow-frontend, namespace: default}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["{SPIFFE[len('spiffe://'):]}frontend"]}}}}]
""")
    resp = wait_for(lambda: (r := call(info["intruder"])).status_code == 403 and r, 20,
                    "intruder to be denied")
    assert resp.text == "RBAC: access denied"
    assert call(info["frontend"]).status_code == 200
    # the explainer agrees with Envoy
    env = {**os.environ, "SHOAL_CONTROL_PLANE": cp.url}
    base = [sys.executable, "-m", "shoal", "authz", "check", "--to", "web", "-o", "json"]
    ok = subprocess.run([*base, "--from", "frontend"], env=env, capture_output=True, text=True)
    no = subprocess.run([*base, "--from", "intruder"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert no.returncode == 3, no.stdout + no.stderr
    [verdict] = json.loads(no.stdout)
    assert verdict["decision"] == "DENIED"
    assert verdict["reason"] == "ALLOW policies apply and none matches"
    [allowed] = json.loads(ok.stdout)
    assert allowed["decision"] == "ALLOWED"
    assert allowed["policy"].endswith("web-allow-frontend")


def test_certificates_rotate_under_steady_load_without_a_failed_request(mesh) -> None:
    _, info = mesh
    admin = f"http://127.0.0.1:{info['web']['adminPort']}/certs"

    def serial() -> str:
        certs = httpx.get(admin, timeout=5).json()["certificates"]
        return next(c["serial_number"] for e in certs for c in e.get("cert_chain", []))

    failures: list[str] = []
    served: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(proxy=f"http://127.0.0.1:{info['frontend']['outboundPort']}",
                          timeout=5) as http:
            while not stop.is_set():
                try:
                    r = http.get("http://web:8080/")
                    served[r.status_code] += 1
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:80]}")
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    serials = {serial()}
    t = threading.Thread(target=load)
    t.start()
    try:
        # both ends renew every ~6 s; watch web's served certificate change 3 times
        wait_for(lambda: serials.add(serial()) or len(serials) >= 4, 60,
                 "three certificate rotations on web", interval=0.5)
    finally:
        stop.set()
        t.join()
    assert failures == []
    assert served[200] > 100
