"""The operator API against a real control plane process, tried as an attacker on the
same host would (issue 11 part 1) and as its operators would: every route needs a
credential, roles per namespace, CSRF / DNS-rebinding refused, tokens revocable, every
change audited, and the user who started the control plane keeps a working CLI."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.control.auth import RULES, AnyOperator, Needs
from shoal.testing.local import ControlPlaneProcess

PA_DISABLE = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shoal-system}
spec: {mtls: {mode: DISABLE}}
"""
ALLOW_ALL = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec: {rules: [{}]}
"""
SERVICE = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web, namespace: %s}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
"""
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    with ControlPlaneProcess(tmp_path_factory.mktemp("operator")) as cp:
        yield cp


def shoal(cp: ControlPlaneProcess, *args: str, env: dict[str, str] | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "shoal", "-c", cp.url, *args], text=True,
                          capture_output=True, timeout=60, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def revision(cp: ControlPlaneProcess) -> int:
    with cp.http() as http:
        return int(http.get("/api/v1/resources").json()["revision"])


def token(cp: ControlPlaneProcess, user: str, *grants: str) -> dict[str, str]:
    with cp.http() as http:
        r = http.post("/api/v1/tokens", json={"user": user, "grants": list(grants),
                                              "ttlSeconds": 600})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}", "id": r.json()["id"]}


def operator_routes() -> list[tuple[str, str]]:
    """Every route that needs an operator credential, with its parameters filled in."""
    out = []
    for (method, pattern), rule in RULES.items():
        if isinstance(rule, AnyOperator | Needs):
            out.append((method, re.sub(r"\{[^}]+\}", "x", pattern)))
    return out


def test_the_credential_file_is_the_operators_alone(cp: ControlPlaneProcess) -> None:
    assert cp.admin_token_path.stat().st_mode & 0o777 == 0o600
    out = shoal(cp, "token", "whoami").stdout
    assert out.strip() == "user:admin (admin:*)"


def test_an_anonymous_local_process_can_do_nothing(cp: ControlPlaneProcess) -> None:
    before = revision(cp)
    with httpx.Client(base_url=cp.url, timeout=10) as anon:
        # the attacks: mesh-wide DISABLE, allow-all, a year-long reader token
        assert anon.post("/api/v1/apply", content=PA_DISABLE, headers=YAML).status_code == 401
        assert anon.post("/api/v1/apply", content=ALLOW_ALL, headers=YAML).status_code == 401
        minted = anon.post("/api/v1/tokens", json={
            "namespace": "shoal-system", "serviceAccount": "cluster-reader",
            "ttlSeconds": 366 * 86400})
        assert minted.status_code == 401 and "credential" in minted.json()["error"]
        # and every other operator route, reads included
        for method, path in operator_routes():
            r = anon.request(method, path, headers={"Content-Type": "application/json"},
                             content=b"{}" if method in ("POST", "PUT") else None)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
        # a token that is not this control plane's, or a workload token, is no credential
        forged = {"Authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA"}
        assert anon.get("/api/v1/resources", headers=forged).status_code == 401
        workload = cp.create_token("default", "web")
        r = anon.get("/api/v1/resources", headers={"Authorization": f"Bearer {workload}"})
        assert r.status_code == 401 and "not an operator credential" in r.json()["error"]
        # what stays open: health, the dashboard's static files, the public trust bundle
        for path in ("/healthz", "/readyz", "/ui/", "/ui/static/app.js", "/api/v1/ca/bundle"):
            assert anon.get(path).status_code == 200, path
    assert revision(cp) == before


def test_cross_site_and_rebinding_requests_are_refused(cp: ControlPlaneProcess) -> None:
    before = revision(cp)
    with cp.http() as http:  # even with the admin's token (say, a leaked header)
        for ctype in ("text/plain", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x"):
            r = http.post("/api/v1/apply", content=ALLOW_ALL, headers={"Content-Type": ctype})
            assert r.status_code == 415, (ctype, r.text)
        r = http.post("/api/v1/apply", content=ALLOW_ALL,
                      headers={**YAML, "Origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-origin" in r.json()["error"]
        r = http.get("/api/v1/resources", headers={"Host": "evil.example:15080"})
        assert r.status_code == 403 and "rebinding" in r.json()["error"]
        # the dashboard's own origin is fine
        own = http.get("/api/v1/resources", headers={"Origin": cp.url})
        assert own.status_code == 200
    assert revision(cp) == before


def test_roles_per_namespace(cp: ControlPlaneProcess) -> None:
    with cp.http() as http:
        for ns in ("team-a", "team-b"):
            assert http.post("/api/v1/apply", content=SERVICE % ns, headers=YAML).is_success
    alice = token(cp, "alice", "edit:team-a", "view:team-b")
    with httpx.Client(base_url=cp.url, timeout=10,
                      headers={"Authorization": alice["Authorization"]}) as http:
        assert http.post("/api/v1/apply", content=(SERVICE % "team-a").replace(
            "port: 80", "port: 81"), headers=YAML).status_code == 200
        r = http.post("/api/v1/apply", content=SERVICE % "team-b", headers=YAML)
        assert r.status_code == 403 and "edit role in namespace 'team-b'" in r.json()["error"]
        # edit is not enough for security policy, nor for the mesh-wide root namespace
        r = http.post("/api/v1/apply", content=ALLOW_ALL.replace("default", "team-a"),
                      headers=YAML)
        assert r.status_code == 403 and "admin role" in r.json()["error"]
        assert http.post("/api/v1/apply", content=PA_DISABLE, headers=YAML).status_code == 403
        # a batch with one forbidden document stores nothing
        mixed = (SERVICE % "team-a").replace("web", "web2") + "---\n" + SERVICE % "team-b"
        assert http.post("/api/v1/apply", content=mixed, headers=YAML).status_code == 403
        listed = http.get("/api/v1/resources").json()["items"]
        assert {r["metadata"]["namespace"] for r in listed} == {"team-a", "team-b"}
        assert not any(r["metadata"]["name"] == "web2" for r in listed)
        assert http.get("/api/v1/resources", params={"namespace": "default"}).status_code == 403
        assert http.delete("/api/v1/resources/Service/team-b/web").status_code == 403
        assert http.get("/api/v1/resources/Service/team-b/web").status_code == 200
        # mesh-wide surfaces and minting need more
        assert http.get("/api/v1/proxies").status_code == 403
        assert http.get("/metrics").status_code == 403
        assert http.post("/api/v1/tokens", json={"namespace": "team-a",
                                                 "serviceAccount": "web"}).status_code == 403
        assert http.post("/api/v1/tokens", json={"user": "mallory",
                                                 "grants": ["admin:*"]}).status_code == 403
        assert http.post("/api/v1/ca/rotate-root").status_code == 403
    viewer = token(cp, "grafana", "view:*")
    with httpx.Client(base_url=cp.url, timeout=10,
                      headers={"Authorization": viewer["Authorization"]}) as http:
        assert http.get("/api/v1/proxies").status_code == 200
        assert http.get("/metrics").status_code == 200
        assert http.post("/api/v1/apply", content=SERVICE % "team-a",
                         headers=YAML).status_code == 403
        assert http.get("/api/v1/audit").status_code == 403


def test_bad_grants_are_refused_with_their_paths(cp: ControlPlaneProcess) -> None:
    with cp.http() as http:
        r = http.post("/api/v1/tokens", json={"user": "x", "grants": ["root:*", "view:BAD"],
                                              "ttlSeconds": 10**9})
    assert r.status_code == 422
    paths = {v["path"] for v in r.json()["violations"]}
    assert paths == {"grants[0]", "grants[1]", "ttlSeconds"}


def test_malformed_revocations_and_audit_queries_are_4xx(cp: ControlPlaneProcess) -> None:
    before = revision(cp)
    with cp.http() as http:
        for body in ({}, {"id": "../x"}, {"id": 5}, {"token": "not.a.token"},
                     {"id": "ab", "reason": 7}, {"id": "a" * 65}):
            r = http.post("/api/v1/tokens/revoke", json=body)
            assert r.status_code == 422 and r.json()["violations"], (body, r.text)
        assert http.get("/api/v1/audit", params={"limit": "x"}).status_code == 422
    assert revision(cp) == before


def test_revoked_tokens_are_refused_at_once(cp: ControlPlaneProcess) -> None:
    bob = token(cp, "bob", "view:*")
    auth = {"Authorization": bob["Authorization"]}
    assert httpx.get(f"{cp.url}/api/v1/proxies", headers=auth).status_code == 200
    out = shoal(cp, "token", "revoke", bob["id"], "--reason", "left the team").stdout
    assert f"revoked token {bob['id']}" in out
    r = httpx.get(f"{cp.url}/api/v1/proxies", headers=auth)
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    # a revoked workload token obtains no certificate and registers nothing
    workload = cp.create_token("default", "web")
    proc = subprocess.run([sys.executable, "-m", "shoal", "-c", cp.url, "token", "revoke",
                           "--token-file", "-"], input=workload, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tls = ssl.create_default_context(cafile=str(cp.ca_bundle))
    r = httpx.post(f"{cp.agent_url}/api/v1/certificates", verify=tls, timeout=10,
                   headers={"Authorization": f"Bearer {workload}"}, json={"csr": "x"})
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    # revocations survive a restart (they are in the store)
    cp.restart()
    assert httpx.get(f"{cp.url}/api/v1/proxies", headers=auth).status_code == 401


def test_every_change_is_audited(cp: ControlPlaneProcess) -> None:
    carol = token(cp, "carol", "edit:team-a")
    auth = {"Authorization": carol["Authorization"], **YAML}
    httpx.post(f"{cp.url}/api/v1/apply", content=(SERVICE % "team-a").replace(
        "port: 80", "port: 82"), headers=auth, timeout=10)
    httpx.post(f"{cp.url}/api/v1/apply", content=PA_DISABLE, headers=auth, timeout=10)
    httpx.post(f"{cp.url}/api/v1/apply", content=PA_DISABLE, headers=YAML, timeout=10)
    entries = json.loads(shoal(cp, "audit", "-o", "json", "--limit", "200").stdout)
    mine = [e for e in entries if e["user"] == "user:carol"]
    applied = next(e for e in mine if e["status"] == 200)
    assert applied["resources"] == ["Service team-a/web configured"]
    assert applied["source"] == "127.0.0.1" and applied["listener"] == "operator"
    assert applied["tokenId"] == carol["id"] and applied["revision"] > 0
    assert any(e["status"] == 403 for e in mine)  # refused attempts are kept too
    assert any(e["user"] == "anonymous" and e["status"] == 401 and
               e["path"] == "/api/v1/apply" for e in entries)
    minted = next(e for e in entries if e.get("createdTokenId") == carol["id"])
    assert minted["user"] == "user:admin" and minted["grants"] == ["edit:team-a"]
    # on disk too, owner-only (a restart keeps the file)
    log = cp.workdir / "data" / "audit.log"
    assert log.stat().st_mode & 0o777 == 0o600
    assert carol["id"] in log.read_text()
    table = shoal(cp, "audit", "--user", "user:carol").stdout
    assert "Service team-a/web configured" in table


def test_the_cli_finds_the_admin_credential_of_shoal_home(cp: ControlPlaneProcess,
                                                        tmp_path: Path) -> None:
    """Without credentials entry or variables, the CLI uses $SHOAL_HOME/data/admin.token
    (what `shoal up` makes); with none of them it says what it needs."""
    env = {"SHOAL_HOME": str(tmp_path)}
    denied = shoal(cp, "get", "services", env=env, check=False)
    assert denied.returncode != 0 and "credential" in (denied.stdout + denied.stderr)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin.token").write_text(cp.admin_token_path.read_text())
    assert shoal(cp, "get", "services", env=env).returncode == 0
    env = {"SHOAL_HOME": str(tmp_path / "none"),
           "SHOAL_API_TOKEN": token(cp, "dave", "view:*")["Authorization"][7:]}
    assert "user:dave (view:*)" in shoal(cp, "token", "whoami", env=env).stdout


def test_grants_can_name_kinds(cp: ControlPlaneProcess) -> None:
    """``edit:team-a:VirtualService``: routing in team-a and nothing else (roles per
    namespace and kind)."""
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: team-a}
spec: {hosts: [web], http: [{route: [{destination: {host: web}}]}]}
"""
    with cp.http() as http:
        assert http.post("/api/v1/apply", content=SERVICE % "team-a", headers=YAML).is_success
    router = token(cp, "router", "edit:team-a:vs")
    with httpx.Client(base_url=cp.url, timeout=10,
                      headers={"Authorization": router["Authorization"]}) as http:
        assert http.get("/api/v1/whoami").json()["grants"] == ["edit:team-a:VirtualService"]
        assert http.post("/api/v1/apply", content=vs, headers=YAML).status_code == 200
        r = http.post("/api/v1/apply", content=(SERVICE % "team-a").replace("80", "88"),
                      headers=YAML)
        assert r.status_code == 403 and "for Service" in r.json()["error"]
        kinds = {i["kind"] for i in http.get("/api/v1/resources").json()["items"]}
        assert kinds == {"VirtualService"}
        assert http.get("/api/v1/resources/Service/team-a/web").status_code == 403
        assert http.get("/api/v1/resources/vs/team-a/web").status_code == 200
        assert http.get("/api/v1/proxies").status_code == 403  # not config: not covered
    with cp.http() as http:
        r = http.post("/api/v1/tokens", json={"user": "x", "grants": ["edit:a:NoSuchKind"]})
    assert r.status_code == 422 and "NoSuchKind" in r.json()["violations"][0]["message"]


GATEWAY_CLASS = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: edge-class, namespace: team-a}
spec: {controllerName: shoal.io/gateway-controller}
"""


def test_cluster_scoped_kinds_live_in_the_root_namespace(cp: ControlPlaneProcess) -> None:
    """GatewayClass and Namespace are cluster-scoped (Kubernetes): kept in the mesh root
    namespace whatever namespace the document or -n names, read from any path
    namespace, written only by who may write the root namespace (ADR 0039)."""
    with cp.http() as http:
        root = http.get("/api/v1/meshconfig").json()["rootNamespace"]
        assert http.post("/api/v1/apply", content=GATEWAY_CLASS, headers=YAML).is_success
        r = http.post("/api/v1/apply", params={"namespace": "team-b"}, headers=YAML,
                      content="apiVersion: v1\nkind: Namespace\n"
                              "metadata: {name: team-b, labels: {team: b}}\n")
        assert r.is_success and r.json()["results"][0]["namespace"] == root
        got = http.get("/api/v1/resources/gc/team-a/edge-class").json()
        assert got["metadata"]["namespace"] == root
        assert got["status"]["conditions"][0]["reason"] == "Accepted"
        listed = http.get("/api/v1/resources", params={"kind": "namespaces",
                                                       "namespace": "team-b"}).json()
        assert [n["metadata"]["labels"] for n in listed["items"]] == [{"team": "b"}]
    alice = token(cp, "alice-gc", "edit:team-a")
    with httpx.Client(base_url=cp.url, timeout=10,
                      headers={"Authorization": alice["Authorization"]}) as http:
        r = http.post("/api/v1/apply", content=GATEWAY_CLASS.replace("edge-class", "mine"),
                      headers=YAML)
        assert r.status_code == 403 and root in r.json()["error"]
