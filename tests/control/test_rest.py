"""The REST API on a real socket: apply is all-or-nothing, registration and leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from shoal.api import load_resource
from shoal.ca import pki
from shoal.ca.tokens import TokenAuthority
from shoal.control.auth import OperatorAuth
from shoal.control.proxies import ProxyInspector
from shoal.control.rest import RestApi
from shoal.registry.leases import WorkloadRegistry
from shoal.store.sqlite import SqliteStore

GOOD = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""
BAD_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 30
"""
YAML = {"Content-Type": "application/yaml"}
WORKLOAD = {
    "apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Workload",
    "metadata": {"name": "reviews-1"},
    "spec": {"address": "127.0.0.1", "ports": {"http": 40000}, "labels": {"app": "reviews"}},
}


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, WorkloadRegistry]]:
    store = SqliteStore(tmp_path / "db", loads=load_resource)
    registry = WorkloadRegistry(store, ttl=0.3)
    tokens = TokenAuthority(pki.new_key(), "cluster.local")
    rest = RestApi(store, registry, ProxyInspector(lambda: [], lambda: {}),
                   ready=asyncio.Event(),
                   auth=OperatorAuth(tokens, bind_host="127.0.0.1"))
    admin, _ = tokens.create_operator("admin", ("admin:*",), 600)
    runner = web.AppRunner(rest.app(), handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                 headers={"Authorization": f"Bearer {admin}"}) as client:
        yield client, registry
    await runner.cleanup()
    await store.close()


async def test_mesh_config_for_operators_only(api) -> None:
    client, _ = api
    r = await client.get("/api/v1/meshconfig")
    assert r.status_code == 200
    assert r.json()["istioRootNamespace"] == "istio-system"
    assert r.json()["extensionProviders"] == []
    anonymous = await client.get("/api/v1/meshconfig", headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_apply_all_or_nothing_with_field_paths(api) -> None:
    client, _ = api
    resp = await client.post("/api/v1/apply", content=GOOD + "---" + BAD_VS, headers=YAML)
    assert resp.status_code == 422
    body = resp.json()
    assert body["violations"] == [{
        "path": "spec.http[0].route", "message": "weights sum to 30; they must sum to 100",
        "document": "doc 2 (VirtualService default/reviews)"}]
    # nothing was stored, not even the valid Service
    listed = (await client.get("/api/v1/resources")).json()
    assert listed["items"] == [] and listed["revision"] == 0


async def test_apply_get_list_delete(api) -> None:
    client, _ = api
    resp = await client.post("/api/v1/apply", content=GOOD, headers=YAML)
    assert resp.json()["results"][0]["outcome"] == "created"
    again = await client.post("/api/v1/apply", content=GOOD, headers=YAML)
    assert again.json()["results"][0]["outcome"] == "unchanged"
    got = (await client.get("/api/v1/resources/svc/default/reviews")).json()
    assert got["spec"]["ports"][0]["port"] == 9080
    assert got["metadata"]["resourceVersion"] == "1"
    assert (await client.delete("/api/v1/resources/services/default/reviews")).status_code == 200
    missing = await client.get("/api/v1/resources/Service/default/reviews")
    assert missing.status_code == 404
    assert "reviews" in missing.json()["error"]


async def test_apply_into_a_namespace_as_kubectl_does(api) -> None:
    """``?namespace=`` (kubectl's -n): documents without one get it; a document naming
    another namespace is refused with the reason, and nothing is stored."""
    client, _ = api
    resp = await client.post("/api/v1/apply", content=GOOD, headers=YAML,
                             params={"namespace": "shop"})
    assert resp.json()["results"][0]["namespace"] == "shop"
    other = GOOD.replace("{name: reviews}", "{name: ratings, namespace: books}")
    refused = await client.post("/api/v1/apply", content=GOOD + "---" + other, headers=YAML,
                                params={"namespace": "shop"})
    assert refused.status_code == 422
    [v] = refused.json()["violations"]
    assert v["path"] == "metadata.namespace" and "-n books" in v["message"]
    same = GOOD.replace("{name: reviews}", "{name: ratings, namespace: shop}")
    ok = await client.post("/api/v1/apply", content=same, headers=YAML,
                           params={"namespace": "shop"})
    assert ok.status_code == 200
    listed = (await client.get("/api/v1/resources")).json()["items"]
    assert {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in listed} == {
        ("shop", "reviews"), ("shop", "ratings")}


async def test_list_by_label_selector(api) -> None:
    client, _ = api
    docs = [GOOD.replace("{name: reviews}", f"{{name: {n}, labels: {{tier: {t}}}}}")
            for n, t in (("reviews", "backend"), ("productpage", "frontend"))]
    await client.post("/api/v1/apply", content="---".join(docs), headers=YAML)

    async def names(selector: str) -> set[str]:
        got = await client.get("/api/v1/resources", params={"labelSelector": selector})
        return {r["metadata"]["name"] for r in got.json()["items"]}

    assert await names("tier=backend") == {"reviews"}
    assert await names("tier!=backend") == {"productpage"}
    assert await names("tier") == {"reviews", "productpage"}
    assert await names("!tier") == set()
    bad = await client.get("/api/v1/resources", params={"labelSelector": "tier in (a)"})
    assert bad.status_code == 422 and "set-based" in bad.text


async def test_watch_streams_events(api) -> None:
    client, _ = api
    await client.post("/api/v1/apply", content=GOOD, headers=YAML)
    lines = []
    async with client.stream("GET", "/api/v1/watch", params={"since": "0"}) as resp:
        async for line in resp.aiter_lines():
            lines.append(line)
            break
    assert '"PUT"' in lines[0] and '"reviews"' in lines[0]


async def test_register_heartbeat_expire(api) -> None:
    client, registry = api
    resp = await client.post("/api/v1/workloads", json={
        "workload": WORKLOAD,
        "service": {"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service",
                    "metadata": {"name": "reviews"},
                    "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http",
                                                                        "port": 9080}]}}})
    assert resp.status_code == 200, resp.text
    stored = (await client.get("/api/v1/resources/wl/default/reviews-1")).json()
    assert stored["metadata"]["annotations"]["shoal.io/registered-by"] == "agent"
    assert (await client.get("/api/v1/resources/svc/default/reviews")).status_code == 200
    hb = await client.put("/api/v1/workloads/default/reviews-1/heartbeat")
    assert hb.status_code == 200
    await asyncio.sleep(0.4)
    assert await registry.expire_once()  # lease ran out: removed from the store
    assert (await client.get("/api/v1/resources/wl/default/reviews-1")).status_code == 404
    hb = await client.put("/api/v1/workloads/default/reviews-1/heartbeat")
    assert hb.status_code == 404  # tells the agent to register again


async def test_registration_never_overwrites_an_operators_service(api) -> None:
    client, _ = api
    await client.post("/api/v1/apply", content=GOOD.replace("9080", "7000"), headers=YAML)
    await client.post("/api/v1/workloads", json={"workload": WORKLOAD, "service": {
        "apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "reviews"},
        "spec": {"ports": [{"name": "http", "port": 9080}]}}})
    svc = (await client.get("/api/v1/resources/svc/default/reviews")).json()
    assert svc["spec"]["ports"][0]["port"] == 7000


async def test_invalid_registration_is_rejected_with_paths(api) -> None:
    client, _ = api
    bad = {**WORKLOAD, "spec": {**WORKLOAD["spec"], "address": "nowhere"}}
    resp = await client.post("/api/v1/workloads", json={"workload": bad})
    assert resp.status_code == 422
    assert resp.json()["violations"][0]["path"] == "spec.address"
