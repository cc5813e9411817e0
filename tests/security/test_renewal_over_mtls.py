"""Tokens only bootstrap a workload (issue 11 part 7): once an agent holds its certificate
it renews it, heartbeats and re-registers over mTLS with that certificate, so its token
can expire or be taken away; revoking the token ends those renewals."""

from __future__ import annotations

import json

import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import app_command

pytestmark = [pytest.mark.envoy]


def _serial(agent: AgentProcess) -> str | None:
    path = agent.run_dir / "agent.json"
    if not path.exists():
        return None
    identity = json.loads(path.read_text()).get("identity") or {}
    return identity.get("serial")


def _audit(cp: ControlPlaneProcess) -> list[dict]:
    with cp.http() as http:
        return list(http.get("/api/v1/audit", params={"limit": 1000}).json()["entries"])


def test_certificates_renew_over_mtls_without_the_token(tmp_path) -> None:
    # 1-minute certificates renewed at 10 %: a renewal every ~6 s
    with ControlPlaneProcess(tmp_path, cert_ttl="1m") as cp:
        token_file = cp.token_file("default", "web")
        web = AgentProcess(cp, service="web", port=8080, name="web-1", token_file=token_file,
                           command=app_command("http"), extra=["--renew-fraction", "0.1"])
        with web:
            cp.wait_synced({"web-1"})
            first = wait_for(lambda: _serial(web), 30, "the first certificate")
            token_file.write_text("not-a-token\n")  # the token is gone
            second = wait_for(lambda: (s := _serial(web)) != first and s, 30,
                              "a renewal without the token")
            wait_for(lambda: _serial(web) not in (first, second), 30,
                     "a second renewal without the token")
            # the workload stayed registered (heartbeats over mTLS), and is still served
            proxies = cp.wait_synced({"web-1"})
            assert any(p["workload"] == "web-1" for p in proxies)
            assert "certificate renewal failed" not in web.log_text()
            assert "heartbeat refused" not in web.log_text()


def test_revoking_the_token_ends_the_renewals(tmp_path) -> None:
    with ControlPlaneProcess(tmp_path, cert_ttl="1m") as cp:
        token_file = cp.token_file("default", "web")
        token = token_file.read_text().strip()
        web = AgentProcess(cp, service="web", port=8080, name="web-1", token_file=token_file,
                           command=app_command("http"), extra=["--renew-fraction", "0.1"])
        with web:
            cp.wait_synced({"web-1"})
            first = wait_for(lambda: _serial(web), 30, "the first certificate")
            with cp.http() as http:
                r = http.post("/api/v1/tokens/revoke", json={"token": token})
            assert r.status_code == 200, r.text
            # the certificate it obtained renews no more (and heartbeats are refused)
            wait_for(lambda: "certificate renewal failed" in web.log_text(), 40,
                     "a refused renewal")
            assert _serial(web) == first
            refused = wait_for(lambda: [e for e in _audit(cp) if e["status"] == 401
                                        and e["path"] == "/api/v1/certificates"], 30,
                               "the refusal in the audit log")
            assert refused[0]["listener"] == "agent"
