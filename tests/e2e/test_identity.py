"""Workload identity for real: control plane CA, tokens, agents over TLS, SDS to Envoy,
certificate renewal and root rotation seen in Envoy's own admin API."""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.agent.identity import token_subject
from shoal.ca import pki
from shoal.ca.csr import make_csr
from shoal.ca.setup import open_ca
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
APP = [sys.executable, "-m", "shoal.testing.apps", "http"]


def agent_state(agent: AgentProcess) -> dict[str, Any]:
    return json.loads((agent.run_dir / "agent.json").read_text())


def envoy_certs(agent: AgentProcess) -> tuple[set[str], set[int]]:
    """(serials of the certificates Envoy presents, sizes of its CA lists) per /certs."""
    admin = agent_state(agent)["adminPort"]
    body = httpx.get(f"http://127.0.0.1:{admin}/certs", timeout=5).json()
    serials = {c["serial_number"] for e in body["certificates"] for c in e["cert_chain"]}
    cas = {len(e["ca_cert"]) for e in body["certificates"] if e.get("ca_cert")}
    return serials, cas


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    with ControlPlaneProcess(tmp_path_factory.mktemp("cp"), lease_ttl=6.0,
                             cert_ttl="1m") as cp:
        yield cp


def test_tokens_and_csrs_are_checked_on_the_agent_api(cp: ControlPlaneProcess) -> None:
    tls = ssl.create_default_context(cafile=str(cp.ca_bundle))
    token_a = cp.create_token("default", "sa-a")
    assert token_subject(token_a) == "spiffe://cluster.local/ns/default/sa/sa-a"
    with httpx.Client(base_url=cp.agent_url, verify=tls, timeout=5) as http:
        def sign(sa: str, token: str | None) -> httpx.Response:
            csr = make_csr(pki.new_key(), f"spiffe://cluster.local/ns/default/sa/{sa}")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return http.post("/api/v1/certificates", json={"csr": csr}, headers=headers)

        ok = sign("sa-a", token_a)
        assert ok.status_code == 200, ok.text
        chain = pki.load_certs("".join(ok.json()["certChain"]))
        assert pki.uri_sans(chain[0]) == ["spiffe://cluster.local/ns/default/sa/sa-a"]
        denied = sign("sa-b", token_a)
        assert denied.status_code == 403 and "token is for" in denied.json()["error"]
        assert sign("sa-a", "garbage").status_code == 401
        assert sign("sa-a", None).status_code == 401
        # operator actions are not available to agents
        assert http.post("/api/v1/tokens", json={"namespace": "default",
                                                 "serviceAccount": "x"}).status_code == 403
    # registration needs a token for the workload's namespace and service account
    workload = {"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Workload",
                "metadata": {"name": "w-1", "namespace": "default"},
                "spec": {"address": "127.0.0.1", "serviceAccount": "sa-b"}}
    r = httpx.post(f"{cp.url}/api/v1/workloads", json={"workload": workload})
    assert r.status_code == 401
    r = httpx.post(f"{cp.url}/api/v1/workloads", json={"workload": workload},
                   headers={"Authorization": f"Bearer {token_a}"})
    assert r.status_code == 403


def test_envoy_gets_renewed_certificates_and_rotated_roots(cp: ControlPlaneProcess) -> None:
    agent = AgentProcess(cp, service="echo", port=8080, command=APP,
                         extra=["--renew-fraction", "0.1"])
    with agent:
        cp.wait_synced({agent.name})  # xDS over TLS, with the SVID from SDS
        state = wait_for(lambda: agent_state(agent)["identity"], 30, "identity")
        assert state["spiffeId"] == "spiffe://cluster.local/ns/default/sa/echo"
        seen: set[str] = set()

        def renewed(n: int) -> set[str] | None:
            serials, _ = envoy_certs(agent)
            seen.update(serials)
            return seen if len(seen) >= n else None

        wait_for(lambda: renewed(3), 40, "Envoy to be served 3 certificates", interval=0.5)
        assert state["serial"].lstrip("0") in {s.lstrip("0") for s in seen}
        with cp.client() as c:
            old_root = c.ca_status()["active"]["fingerprint"]
            c.rotate_root()
        wait_for(lambda: envoy_certs(agent)[1] == {2}, 30, "old + new roots in ROOTCA")
        with cp.client() as c:
            new_status = c.ca_status()
            new_issuer = new_status["active"]["subject"]
            wait_for(lambda: c.workload_certs("default", agent.name)["reported"]["serial"]
                     == c.workload_certs("default", agent.name)["issued"]["serial"]
                     and c.workload_certs("default", agent.name)["issued"]["issuer"]
                     == new_issuer, 30, "a certificate from the new root")
            c.prune_roots()
        wait_for(lambda: envoy_certs(agent)[1] == {1}, 30, "only the new root in ROOTCA")
        cp.wait_synced({agent.name})
    cp.restart()  # the CA survives a restart: same (rotated) root
    with cp.client() as c:
        status = c.ca_status()
    assert status["active"]["fingerprint"] == new_status["active"]["fingerprint"] != old_root
    assert len(status["roots"]) == 1


def test_an_agent_refuses_a_control_plane_from_another_ca(cp: ControlPlaneProcess,
                                                          tmp_path: Path) -> None:
    open_ca(tmp_path / "other", "cluster.local", 3600)
    agent = AgentProcess(cp, service="stranger", port=8080, command=APP,
                         extra=["--ready-timeout", "3", "--ca-bundle",
                                str(tmp_path / "other" / "root-cert.pem")])
    with agent:
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in agent.log_text(), 30,
                 "the agent to refuse the control plane's certificate")
        state = wait_for(lambda: agent_state(agent), 30, "agent.json")
        assert state["identity"] is None


def test_the_agent_listener_serves_agents_only(cp: ControlPlaneProcess) -> None:
    """Every workload can reach the agent listener: it must not let one apply, delete or
    read the mesh's config (an AuthorizationPolicy that allows everything, say)."""
    tls = ssl.create_default_context(cafile=str(cp.ca_bundle))
    policy = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
              "metadata: {name: allow-all, namespace: default}\nspec: {rules: [{}]}\n")
    with cp.http() as http:
        before = http.get("/api/v1/resources").json()["revision"]
    with httpx.Client(base_url=cp.agent_url, verify=tls, timeout=5) as http:
        refused = [
            http.post("/api/v1/apply", content=policy,
                      headers={"Content-Type": "application/yaml"}),
            http.get("/api/v1/resources"),
            http.get("/api/v1/resources/Service/default/x"),
            http.delete("/api/v1/resources/Service/default/x"),
            http.get("/api/v1/watch"),
            http.get("/api/v1/proxies"),
            http.get("/api/v1/logs"),
            http.get("/api/v1/traces"),
            http.get("/api/v1/topology"),
            http.get("/metrics"),
            http.get("/ui/"),
            http.post("/api/v1/ca/rotate-root"),
        ]
        for r in refused:
            assert r.status_code == 403, (r.request.method, r.request.url, r.status_code)
            assert "operator API only" in r.json()["error"]
        # what agents and remote control planes use is still there (and checks tokens)
        assert http.get("/readyz").status_code == 200
        assert http.get("/api/v1/ca/bundle").status_code == 200
        assert http.post("/api/v1/workloads", json={}).status_code == 401
        assert http.post("/api/v1/certificates", json={}).status_code == 401
        assert http.get("/api/v1/discovery").status_code in (401, 404)
        assert http.get("/api/v1/no-such-thing").status_code == 404
    with cp.http() as http:
        after = http.get("/api/v1/resources").json()["revision"]
    assert after == before  # nothing was stored
