"""Two control-plane instances sharing one etcd: config applied through one is served to
sidecars connected to the other, and registrations (leases in etcd) are seen by both."""

from __future__ import annotations

import shutil

import httpx
import pytest

from shoal.testing.etcd import EtcdServer
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [
    pytest.mark.envoy, pytest.mark.slow,
    pytest.mark.skipif(shutil.which("etcd") is None,
                       reason="etcd-server is not installed (apt-get install etcd-server)"),
]

ECHO = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080}]
"""
TO_V2 = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http: [{route: [{destination: {host: echo, subset: v2}}]}]
"""


BULK = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: bulk-{i}}}
spec: {{hosts: [bulk-{i}.example.com], ports: [{{number: 80, name: http, protocol: HTTP}}]}}
"""


def test_config_applied_through_one_instance_is_served_by_the_other(tmp_path) -> None:
    etcd = EtcdServer(tmp_path / "etcd")
    etcd.start()
    store = ["--etcd-endpoints", etcd.url]
    try:
        with ControlPlaneProcess(tmp_path / "a", store="etcd", secure=False, extra=store) as a, \
             ControlPlaneProcess(tmp_path / "b", store="etcd", secure=False, extra=store) as b:
            # workloads and the client all talk to instance B only
            agents = [
                AgentProcess(b, service="echo", port=8080, name="echo-v1",
                             labels={"version": "v1"}, command=app_command("http")),
                AgentProcess(b, service="echo", port=8080, name="echo-v2",
                             labels={"version": "v2"}, command=app_command("http")),
                AgentProcess(b, service="client", port=7000, name="client",
                             command=app_command("http")),
            ]
            try:
                with a.client() as c:
                    c.apply(ECHO)
                    # more than one etcd txn holds: refused whole with a 422, nothing stored
                    many = "\n---\n".join(BULK.format(i=i) for i in range(130))
                    with a.http() as http:
                        r = http.post("/api/v1/apply", content=many.encode(),
                                      headers={"content-type": "application/yaml"})
                    assert r.status_code == 422, r.text
                    assert "at most 128 at once" in r.text
                    assert not c.list("ServiceEntry")["items"]
                for agent in agents:
                    agent.start()
                b.wait_synced({"echo-v1", "echo-v2", "client"})
                # registrations made through B are visible through A (shared store)
                def registered_via_a() -> bool:
                    with a.client() as c:
                        names = {w["metadata"]["name"] for w in c.list("Workload")["items"]}
                    return {"echo-v1", "echo-v2", "client"} <= names
                wait_for(registered_via_a, 30, "registrations to be visible through A")
                proxy = f"http://127.0.0.1:{agent_info(agents[2])['outboundPort']}"
                with httpx.Client(proxy=proxy, timeout=5) as http:
                    wait_for(lambda: {http.get("http://echo:8080/").json()["served_by"]
                                      for _ in range(10)} == {"echo-v1", "echo-v2"}, 30,
                             "both versions")
                    with a.client() as c:  # route change applied through A ...
                        c.apply(TO_V2)
                    # ... reaches the sidecar connected to B
                    wait_for(lambda: {http.get("http://echo:8080/").json()["served_by"]
                                      for _ in range(10)} == {"echo-v2"}, 30, "v2 only")
            finally:
                for agent in agents:
                    agent.stop()
    finally:
        etcd.stop()
