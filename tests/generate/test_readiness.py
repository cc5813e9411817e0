"""A workload registered not ready (its sidecar cannot take connections yet) is nobody's
endpoint, while its own sidecar already gets its inbound listener."""

from __future__ import annotations

from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import ENDPOINT, LISTENER

from .conftest import load_mesh, proxy

NEW_REVIEWS = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata:
  name: reviews-v4
  annotations: {shoal.io/registered-by: agent, shoal.io/ready: "false"}
spec: {address: 127.0.0.44, labels: {app: reviews, version: v4}, ports: {http: 9180}}
"""


def _addresses(mesh, node: str) -> set[str]:  # type: ignore[no-untyped-def]
    eds = generate(GenerationContext(mesh), proxy(node)).get(ENDPOINT).items
    cla = eds["outbound|9080||reviews.default.svc.cluster.local"]
    return {lb.endpoint.address.socket_address.address
            for group in cla.endpoints for lb in group.lb_endpoints}


def test_not_ready_is_no_endpoint_but_gets_its_inbound_listener() -> None:
    mesh = load_mesh(NEW_REVIEWS)
    reviews = next(s for s in mesh.services if s.metadata.name == "reviews")
    port = reviews.spec.ports[0]
    assert "reviews-v4" not in {e.workload for e in mesh.endpoints(reviews, port)}
    assert "127.0.0.44" not in _addresses(mesh, "productpage-v1")
    listeners = generate(GenerationContext(mesh), proxy("reviews-v4",
                                                        app_ports={"http": 9080}))
    assert any("9180" in name for name in listeners.get(LISTENER).items)

    ready = load_mesh(NEW_REVIEWS.replace('shoal.io/ready: "false"', 'shoal.io/ready: "true"'))
    assert "127.0.0.44" in _addresses(ready, "productpage-v1")
