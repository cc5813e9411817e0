"""A connect storm: more proxies than gRPC core queues by default connect at once
(issue 13; e.g. every sidecar of a site reconnecting after a control-plane restart).

gRPC core queues new streams until the server's event loop takes them and, past 1,000
pending ones, cancelled the newcomers (CANCELLED), so proxies reconnected in waves. The
control plane lets them wait instead: every stream is served, none is cancelled. No
assertion on time: the clients only have to get there (generous limit for a busy CI).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from shoal.testing import FakeAdsClient
from shoal.testing.local import ControlPlaneProcess
from shoal.xds.node import node_metadata
from shoal.xds.types import CLUSTER, LISTENER, ProxyMetadata

pytestmark = [pytest.mark.slow]

PROXIES = 1_500
SERVICES = 5
MESH = "\n---\n".join(
    f"""apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {{name: svc-{i}, namespace: default}}
spec: {{selector: {{app: svc-{i}}}, ports: [{{name: http, port: 8080, protocol: http}}]}}
---
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: svc-{i}-0, namespace: default}}
spec: {{address: 10.0.0.{i + 1}, labels: {{app: svc-{i}}}, ports: {{http: 8080}}}}"""
    for i in range(SERVICES))


async def storm(target: str) -> list[FakeAdsClient]:
    channel = grpc.aio.insecure_channel(target)  # one connection: all streams at once
    clients = [
        FakeAdsClient(target, f"storm-{i}.default", node_metadata(ProxyMetadata(
            workload=f"svc-{i % SERVICES}-0",
            outbound_port=15001, app_ports={"http": 8080}), "default"), channel=channel)
        for i in range(PROXIES)]
    try:
        started = await asyncio.gather(*(c.start() for c in clients), return_exceptions=True)
        assert [r for r in started if isinstance(r, BaseException)] == []
        await asyncio.gather(*(c.wait_for(lambda c: CLUSTER in c.versions
                                          and LISTENER in c.versions, timeout=600)
                               for c in clients))
        return clients
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await channel.close()


def test_every_stream_of_a_connect_storm_is_served(tmp_path) -> None:
    with ControlPlaneProcess(tmp_path, store="sqlite") as cp:
        with cp.client() as c:
            c.apply(MESH, source="test")
        clients = asyncio.run(storm(cp.xds))
    assert [c.node.id for c in clients if c.error is not None] == []
    assert all(c.versions.get(CLUSTER) for c in clients)
