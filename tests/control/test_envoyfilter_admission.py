"""EnvoyFilter admission (docs/adr/0034) through the REST API on a real socket, with the
bundled Envoy validating: a patch Envoy would reject gets a 422 with Envoy's reason and
nothing is stored; a good one is stored; only mesh admins may write EnvoyFilters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from shoal.api import load_resource
from shoal.api.parse import parse_yaml
from shoal.ca import pki
from shoal.ca.tokens import TokenAuthority
from shoal.control.admission import Admission
from shoal.control.auth import OperatorAuth
from shoal.control.proxies import ProxyInspector
from shoal.control.rest import RestApi
from shoal.registry.leases import WorkloadRegistry
from shoal.registry.snapshot import MeshSnapshot
from shoal.store.sqlite import SqliteStore

pytestmark = pytest.mark.envoy
MESH = (Path(__file__).resolve().parents[1] / "generate" / "mesh.yaml").read_text()
YAML = {"Content-Type": "application/yaml"}


def lua_filter(operation: str, name: str = "add-header") -> str:
    return f"""apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: {name}, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: productpage}}}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {{name: envoy.filters.http.router}}
    patch:
      operation: {operation}
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code: {{inline_string: "function envoy_on_request(h) end"}}
"""


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    store = SqliteStore(tmp_path / "db", loads=load_resource)
    mesh = MeshSnapshot.build(parse_yaml(MESH), revision=1)
    tokens = TokenAuthority(pki.new_key(), "cluster.local")
    rest = RestApi(store, WorkloadRegistry(store, ttl=5), ProxyInspector(lambda: [], lambda: {}),
                   ready=asyncio.Event(), auth=OperatorAuth(tokens, bind_host="127.0.0.1"),
                   admit=Admission(lambda: mesh, lambda: {}).check)
    admin, _ = tokens.create_operator("admin", ("admin:*",), 600)
    ns_admin, _ = tokens.create_operator("alice", ("admin:default",), 600)
    runner = web.AppRunner(rest.app(), handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                 headers={"Authorization": f"Bearer {admin}"}) as client:
        yield client, ns_admin
    await runner.cleanup()
    await store.close()


async def test_a_patch_envoy_rejects_is_refused_with_envoys_reason(api) -> None:
    client, _ = api
    r = await client.post("/api/v1/apply", content=lua_filter("INSERT_AFTER"), headers=YAML)
    assert r.status_code == 422, r.text
    text = r.text
    assert "EnvoyFilter default/add-header" in text
    assert "Envoy rejects the config of proxy productpage-v1.default" in text
    assert "router" in text and "last" in text  # Envoy's own words: the router must be last
    listed = await client.get("/api/v1/resources", params={"kind": "EnvoyFilter"})
    assert listed.json()["items"] == []  # nothing stored


async def test_a_good_patch_is_stored(api) -> None:
    client, _ = api
    r = await client.post("/api/v1/apply", content=lua_filter("INSERT_BEFORE"), headers=YAML)
    assert r.status_code == 200, r.text
    listed = await client.get("/api/v1/resources", params={"kind": "EnvoyFilter"})
    assert [i["metadata"]["name"] for i in listed.json()["items"]] == ["add-header"]


async def test_only_mesh_admins_write_envoy_filters(api) -> None:
    client, ns_admin = api
    r = await client.post("/api/v1/apply", content=lua_filter("INSERT_BEFORE"),
                          headers={**YAML, "Authorization": f"Bearer {ns_admin}"})
    assert r.status_code == 403, r.text
    assert "admin role mesh-wide" in r.text
