"""`shoal logs` without the access-log stream, without Envoy: which agents the control
plane asks, how it merges their pages and follows with one cursor, what it says of the
agents that do not answer, the /api/v1/logs route in both modes, and the HTTPS client
against a real agent endpoint (mTLS, who may call, whose answer it takes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shoal.agent.access_logs import LocalAccessLog
from shoal.agent.identity import Svid
from shoal.agent.metrics import MetricsEndpoint, ProxyMetrics
from shoal.api import Resource, parse_yaml
from shoal.ca.authority import WORKLOAD_DNS_NAME
from shoal.ca.serving import SERVER_NAME
from shoal.envoy import free_port
from shoal.errors import Unavailable
from shoal.registry.snapshot import MeshSnapshot
from shoal.telemetry.agent_logs import (
    MAX_TAIL,
    AgentLogs,
    HttpsAgents,
    Target,
    decode_cursor,
    encode_cursor,
    targets,
)
from shoal.telemetry.hub import Telemetry
from shoal.telemetry.names import Identity
from shoal.telemetry.scrape import METRICS_PORT_ANNOTATION
from shoal.testing.pki import Leaf, TestCA

WEB_SA = "spiffe://cluster.local/ns/shop/sa/web"


def access(i: int) -> bytes:
    """A line of the sidecar's JSON access log (shoal.xds.generate.telemetry)."""
    return json.dumps({"log": "access", "kind": "http", "direction": "inbound",
                       "start_time": f"2025-01-01T10:00:{i:02d}.000Z", "path": f"/{i}",
                       "status": 200}).encode() + b"\n"


def workload(name: str, *, ns: str = "shop", app: str = "web", port: str | None = "15020",
             agent: bool = True, remote: bool = False, sa: str = "web") -> Resource:
    notes = {**({METRICS_PORT_ANNOTATION: port} if port is not None else {}),
             **({"shoal.io/registered-by": "agent"} if agent else {}),
             **({"multicluster.shoal.io/remote-cluster": "west"} if remote else {})}
    (res,) = parse_yaml(f"""
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: {ns}, annotations: {json.dumps(notes)}}}
spec: {{address: 10.0.0.2, labels: {{app: {app}}}, ports: {{http: 31000}},
        serviceAccount: {sa}}}
""")
    return res


def mesh_of(*workloads: Resource) -> MeshSnapshot:
    return MeshSnapshot.build(workloads, 1)


# -- which agents ------------------------------------------------------------------------

def test_targets_are_the_services_agent_registered_local_workloads():
    mesh = mesh_of(workload("web-1"), workload("web-2", port=None),
                   workload("web-3", ns="other"), workload("web-4", remote=True),
                   workload("web-5", agent=False), workload("db-1", app="db"))
    found, missing = targets(mesh, "web")
    assert found == [Target("other", "web-3", "10.0.0.2:15020",
                            "spiffe://cluster.local/ns/other/sa/web"),
                     Target("shop", "web-1", "10.0.0.2:15020", WEB_SA)]
    assert [(m["workload"], m["namespace"]) for m in missing] == [("web-2", "shop")]
    assert "serves no endpoint" in missing[0]["reason"]
    assert [t.workload for t in targets(mesh, "web", "shop")[0]] == ["web-1"]
    assert [t.workload for t in targets(mesh, "web.other")[0]] == ["web-3"]
    assert targets(mesh, "web.other", "shop") == ([], [])
    assert targets(mesh, "nothing") == ([], [])
    assert found[1].key == "web-1.shop"


def test_cursor_round_trip_and_refusals():
    assert decode_cursor("") == {}
    assert decode_cursor(encode_cursor({"b.x": "1:2", "a.x": "3:4"})) == {
        "a.x": "3:4", "b.x": "1:2"}
    assert decode_cursor("e30") == {}  # "{}"
    for bad in ("!!", "WzFd", "eyJhIjogMX0", "x" * 70_000):  # [1], {"a": 1}, too long
        with pytest.raises(ValueError):
            decode_cursor(bad)


# -- the fan-out, with agents faked --------------------------------------------------------

def entry(workload: str, second: int, path: str = "/") -> dict[str, Any]:
    return {"reporter": f"{workload}.shop", "start_time": f"2025-01-01T10:00:{second:02d}Z",
            "path": path}


@dataclass
class FakeAgent:
    """An agent's log as a list; its cursor is how many entries were handed out."""

    entries: list[dict[str, Any]]
    down: bool = False
    hang: bool = False
    calls: int = 0


class FakeAgents:
    def __init__(self, **agents: FakeAgent) -> None:
        self.agents = agents
        self.asked: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, target: Target, params: dict[str, str]) -> dict[str, Any]:
        agent = self.agents[target.workload]
        agent.calls += 1
        self.asked.append((target.workload, dict(params)))
        if agent.hang:
            await asyncio.Event().wait()
        if agent.down:
            raise Unavailable("connection refused")
        start = int(params.get("cursor", "0"))
        new = agent.entries[start:]
        return {"entries": new[-int(params["tail"]):], "cursor": str(len(agent.entries))}


def fanout(agents: FakeAgents, **kw: Any) -> AgentLogs:
    mesh = mesh_of(*(workload(name) for name in agents.agents))
    return AgentLogs(lambda: mesh, agents, **kw)


async def test_replicas_merged_by_time_newest_tail_then_only_newer():
    a = FakeAgent([entry("web-1", s, f"/a{s}") for s in (1, 4, 6)])
    b = FakeAgent([entry("web-2", s, f"/b{s}") for s in (2, 3, 5)])
    logs = fanout(FakeAgents(**{"web-1": a, "web-2": b}))
    page = await logs.query("web", tail=100)
    assert [e["path"] for e in page["entries"]] == ["/a1", "/b2", "/b3", "/a4", "/b5", "/a6"]
    assert page["unreachable"] == []
    newest = await logs.query("web", tail=2)
    assert [e["path"] for e in newest["entries"]] == ["/b5", "/a6"]
    # following: only what is new since the cursor
    a.entries.append(entry("web-1", 8, "/a8"))
    b.entries.append(entry("web-2", 7, "/b7"))
    after = await logs.query("web", tail=100, cursor=page["cursor"])
    assert [e["path"] for e in after["entries"]] == ["/b7", "/a8"]
    assert (await logs.query("web", cursor=after["cursor"]))["entries"] == []
    assert decode_cursor(after["cursor"]) == {"web-1.shop": "4", "web-2.shop": "4"}


async def test_tail_is_capped_and_asked_of_each_agent():
    agents = FakeAgents(**{"web-1": FakeAgent([])})
    logs = fanout(agents)
    await logs.query("web", tail=0)
    await logs.query("web", tail=10 * MAX_TAIL)
    await logs.query("web", tail=7)
    assert [p["tail"] for _, p in agents.asked] == [str(MAX_TAIL), str(MAX_TAIL), "7"]


async def test_an_agent_down_is_reported_and_keeps_its_cursor():
    up = FakeAgent([entry("web-1", 1, "/up")])
    down = FakeAgent([entry("web-2", 2, "/down")])
    logs = fanout(FakeAgents(**{"web-1": up, "web-2": down}))
    first = await logs.query("web")
    assert [e["path"] for e in first["entries"]] == ["/up", "/down"]
    down.down = True
    up.entries.append(entry("web-1", 4, "/up2"))
    page = await logs.query("web", cursor=first["cursor"])
    assert [e["path"] for e in page["entries"]] == ["/up2"]
    assert page["unreachable"] == [{"workload": "web-2", "namespace": "shop",
                                    "reason": "connection refused"}]
    assert decode_cursor(page["cursor"])["web-2.shop"] == "1"  # kept for when it is back
    down.down = False
    down.entries.append(entry("web-2", 5, "/back"))
    back = await logs.query("web", cursor=page["cursor"])
    assert [e["path"] for e in back["entries"]] == ["/back"] and back["unreachable"] == []


async def test_a_silent_agent_times_out_without_holding_the_others():
    agents = FakeAgents(**{"web-1": FakeAgent([entry("web-1", 1)]),
                           "web-2": FakeAgent([], hang=True)})
    page = await fanout(agents, timeout=0.2).query("web")
    assert len(page["entries"]) == 1
    assert page["unreachable"] == [{"workload": "web-2", "namespace": "shop",
                                    "reason": "no answer within 0.2s"}]


async def test_entries_an_agent_reports_for_another_workload_are_dropped():
    agents = FakeAgents(**{"web-1": FakeAgent([entry("web-1", 1, "/mine"),
                                               entry("web-2", 2, "/not-mine"), "junk"])})
    page = await fanout(agents).query("web")  # type: ignore[list-item]
    assert [e["path"] for e in page["entries"]] == ["/mine"]


async def test_wait_polls_until_something_new_or_the_end():
    a = FakeAgent([])
    agents = FakeAgents(**{"web-1": a})
    logs = fanout(agents, poll_interval=0.01)
    empty = await logs.query("web", wait=0.1)
    assert empty["entries"] == [] and a.calls >= 2
    calls = a.calls
    await asyncio.wait_for(logs.query("web", wait=float("nan")), 30)  # no wait at all
    assert a.calls == calls + 1

    async def later() -> None:
        while a.calls < 3:
            await asyncio.sleep(0.01)
        a.entries.append(entry("web-1", 1, "/late"))

    task = asyncio.create_task(later())
    page = await logs.query("web", cursor=empty["cursor"], wait=30)
    await task
    assert [e["path"] for e in page["entries"]] == ["/late"]


async def test_a_bad_cursor_is_refused():
    with pytest.raises(ValueError):
        await fanout(FakeAgents(**{"web-1": FakeAgent([])})).query("web", cursor="%%")


# -- the route, both modes --------------------------------------------------------------------

async def test_route_without_the_stream_reads_the_agents():
    agents = FakeAgents(**{"web-1": FakeAgent([entry("web-1", 1, "/x")])})
    telemetry = Telemetry(agent_logs=fanout(agents))
    app = web.Application()
    telemetry.add_routes(app)
    async with TestClient(TestServer(app)) as http:
        r = await http.get("/api/v1/logs", params={"service": "web", "tail": "5"})
        body = await r.json()
        assert r.status == 200 and [e["path"] for e in body["entries"]] == ["/x"]
        assert body["unreachable"] == [] and decode_cursor(body["cursor"])
        assert (await http.get("/api/v1/logs")).status == 400  # which service?
        r = await http.get("/api/v1/logs", params={"service": "web", "cursor": "%%"})
        assert r.status == 400


async def test_route_with_the_stream_returns_a_cursor_too():
    telemetry = Telemetry()
    telemetry.logs.add([{"service": "web", "namespace": "shop", "path": f"/{i}"}
                        for i in range(3)])
    app = web.Application()
    telemetry.add_routes(app)
    async with TestClient(TestServer(app)) as http:
        body = await (await http.get("/api/v1/logs", params={"service": "web"})).json()
        assert [e["path"] for e in body["entries"]] == ["/0", "/1", "/2"]
        assert body["cursor"] == "3" and body["unreachable"] == []
        telemetry.logs.add([{"service": "web", "namespace": "shop", "path": "/3"}])
        body = await (await http.get("/api/v1/logs", params={
            "service": "web", "cursor": body["cursor"]})).json()
        assert [e["path"] for e in body["entries"]] == ["/3"] and body["cursor"] == "4"
        body = await (await http.get("/api/v1/logs", params={
            "service": "web", "cursor": "4", "wait": "0.05"})).json()
        assert body["entries"] == [] and body["cursor"] == "4"
        assert (await http.get("/api/v1/logs", params={"cursor": "abc"})).status == 400


# -- the HTTPS client against a real agent endpoint ------------------------------------------

def svid(ca: TestCA, spiffe: str) -> Svid:
    leaf = ca.leaf(uris=[spiffe], dns=[WORKLOAD_DNS_NAME])
    now = dt.datetime.now(dt.UTC)
    return Svid(spiffe, (leaf.cert_pem.decode(),), leaf.key_pem, (ca.pem.decode(),), "1",
                format(leaf.cert.serial_number, "x"), now, now + dt.timedelta(hours=1), now)


@dataclass
class FakeIdentity:
    spiffe_id: str
    current: Svid | None

    def subscribe(self, callback: Any) -> None:
        pass


@dataclass
class Agent:
    ca: TestCA
    target: Target
    tmp: Path

    def client(self, leaf: Leaf) -> HttpsAgents:
        files = leaf.write(self.tmp, f"client-{id(leaf)}")
        ctx = ssl.create_default_context(cadata=self.ca.pem.decode())
        ctx.load_cert_chain(files.cert, files.key)
        return HttpsAgents(lambda: ctx, timeout=10)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    ca = TestCA()
    log = tmp_path / "envoy.log"
    log.write_bytes(b"[info] envoy says hello\n" + access(1) + access(2))
    port = free_port()
    endpoint = MetricsEndpoint(
        FakeIdentity(WEB_SA, svid(ca, WEB_SA)), lambda: None,  # type: ignore[arg-type,return-value]
        ProxyMetrics(), host="127.0.0.1", port=port, scraper="spiffe://x/ns/y/sa/z",
        access_log=LocalAccessLog(log, Identity.from_node("web-1.shop", "web")))
    task = asyncio.create_task(endpoint.run())
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    yield Agent(ca, Target("shop", "web-1", f"127.0.0.1:{port}", WEB_SA), tmp_path)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_control_plane_reads_the_agents_log_over_mtls(agent: Agent):
    control_plane = agent.client(agent.ca.leaf(dns=[SERVER_NAME, "localhost"]))
    page = await control_plane(agent.target, {"tail": "10"})
    assert [e["path"] for e in page["entries"]] == ["/1", "/2"]
    assert page["entries"][0]["reporter"] == "web-1.shop"
    more = await control_plane(agent.target, {"tail": "10", "cursor": page["cursor"]})
    assert more["entries"] == []
    # through the fan-out: the same, merged, with a composite cursor
    mesh = mesh_of(workload("web-1"))
    logs = AgentLogs(lambda: mesh, lambda t, p: control_plane(agent.target, p))
    assert len((await logs.query("web"))["entries"]) == 2


async def test_workloads_may_not_read_it_and_answers_are_checked(agent: Agent):
    workload_cert = agent.ca.leaf(uris=["spiffe://cluster.local/ns/shop/sa/client"],
                                  dns=[WORKLOAD_DNS_NAME])
    with pytest.raises(Unavailable, match=r"answered 403: .*only the control plane"):
        await agent.client(workload_cert)(agent.target, {"tail": "10"})
    control_plane = agent.client(agent.ca.leaf(dns=[SERVER_NAME]))
    with pytest.raises(Unavailable, match="answered 400"):
        await control_plane(agent.target, {"cursor": "nope"})
    # the answering agent must be the workload's identity
    other = Target("shop", "web-1", agent.target.address,
                   "spiffe://cluster.local/ns/shop/sa/db")
    with pytest.raises(Unavailable, match=r"answered as .*sa/web, not as .*sa/db"):
        await control_plane(other, {"tail": "10"})
    # no client certificate: no TLS session
    anonymous = HttpsAgents(lambda: ssl.create_default_context(cadata=agent.ca.pem.decode()),
                            timeout=10)
    with pytest.raises(Unavailable):
        await anonymous(agent.target, {"tail": "10"})
    # nobody there
    gone = Target("shop", "web-1", f"127.0.0.1:{free_port()}", WEB_SA)
    with pytest.raises(Unavailable):
        await control_plane(gone, {"tail": "10"})
