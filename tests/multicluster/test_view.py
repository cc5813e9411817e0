"""ClusterView: the local store merged with remote clusters, as the sync loop sees it."""

from __future__ import annotations

import asyncio

from shoal.api import load_resource
from shoal.api.parse import parse_yaml
from shoal.multicluster.labels import CLUSTER_LABEL, NETWORK_LABEL, remote_view
from shoal.multicluster.view import ClusterView
from shoal.store.base import EventType
from shoal.store.memory import MemoryStore

WL = """apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {name: NAME}
spec: {address: 10.0.0.1, labels: {app: web}}"""
SVC = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: PORT}]}"""


def doc(text: str, **subs: str):
    for k, v in subs.items():
        text = text.replace(k, v)
    return parse_yaml(text)[0]


async def _scenario() -> None:
    store = MemoryStore(loads=load_resource)
    await store.apply([doc(WL, NAME="web-1")])
    view = ClusterView(store, cluster="a", network="net-a")
    items, rev = await view.list()
    (wl,) = items
    assert wl.spec.labels[CLUSTER_LABEL] == "a" and wl.spec.labels[NETWORK_LABEL] == "net-a"
    assert wl.spec.locality == "a"  # the cluster is the region of a workload without one
    stored = await store.get(wl.key)
    assert CLUSTER_LABEL not in stored.spec.labels  # never written to the store

    events = view.watch(since=rev)
    remote = {r.key: r for r in (remote_view(doc(WL, NAME="web-1"), "b", "net-b"),
                                 doc(SVC, PORT="8080"))}
    view.replace_remote("b", remote)
    got = [await anext(events), await anext(events)]
    assert {(e.type, e.key.kind, e.key.name) for e in got} == {
        (EventType.PUT, "Workload", "web-1.b"), (EventType.PUT, "Service", "web")}
    assert all(e.revision == rev for e in got)  # the local store's revision

    # a local Service with the same name wins over the remote one
    await store.apply([doc(SVC, PORT="9090")])
    e = await anext(events)
    assert e.type is EventType.PUT and e.resource.spec.ports[0].port == 9090
    view.replace_remote("b", {k: r for k, r in remote.items() if k.kind == "Service"})
    e = await anext(events)  # the remote workload went; the remote Service stays hidden
    assert (e.type, e.key.name) == (EventType.DELETE, "web-1.b")
    await store.delete([e.key.__class__("Service", "default", "web")])
    e = await anext(events)  # ours deleted: the remote one shows through
    assert e.type is EventType.PUT and e.resource.spec.ports[0].port == 8080
    names = sorted((r.kind, r.metadata.name) for r in (await view.list())[0])
    assert names == [("Service", "web"), ("Workload", "web-1")]
    await events.aclose()


def test_view_merges_local_and_remote() -> None:
    asyncio.run(_scenario())
