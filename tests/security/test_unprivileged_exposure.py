"""Unprivileged mode says its inherent gap out loud (issue 11 part 9): once STRICT mTLS
(or authorization) protects a workload's sidecar, its agent warns that the app's own port
on the host's loopback is still open to every local process — which it is."""

from __future__ import annotations

import httpx
import pytest

from shoal.agent.exposure import Protection, inbound_protection
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web-strict}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
"""


def _dump(port: int, *chains: dict) -> dict:
    listener = {"address": {"socket_address": {"port_value": port}},
                "filter_chains": list(chains)}
    return {"configs": [{"name": "x", "active_state": {"listener": listener}}]}


def test_what_envoy_enforces_is_read_from_its_config() -> None:
    plain, mtls = {"name": "plaintext", "filters": []}, {"name": "mtls", "filters": []}
    assert inbound_protection(_dump(7, plain, mtls), 7) == Protection(False, False)
    assert inbound_protection(_dump(7, mtls), 7) == Protection(True, False)
    rbac = {"name": "plaintext", "filters": [{"name": "envoy.filters.http.rbac"}]}
    assert inbound_protection(_dump(7, rbac), 7) == Protection(False, True)
    assert inbound_protection(_dump(7, mtls), 8) is None


@pytest.mark.envoy
def test_the_agent_warns_when_strict_mtls_leaves_the_app_port_open(tmp_path) -> None:
    with ControlPlaneProcess(tmp_path) as cp:
        web = AgentProcess(cp, service="web", port=8080, name="web-1",
                           labels={"app": "web"}, command=app_command("http"))
        with web:
            cp.wait_synced({"web-1"})
            assert "unprivileged mode" not in web.log_text()  # PERMISSIVE: nothing to say
            with cp.client() as c:
                c.apply(STRICT)
            line = wait_for(lambda: next((ln for ln in web.log_text().splitlines()
                                          if "unprivileged mode" in ln), None), 30,
                            "the exposure warning in the agent's log")
            assert "STRICT mTLS" in line and "default/web-1" in line
            # and the warning is true: the app answers a local caller without mTLS
            app_port = agent_info(web)["appPort"]
            assert httpx.get(f"http://127.0.0.1:{app_port}/", timeout=5,
                             trust_env=False).status_code == 200
