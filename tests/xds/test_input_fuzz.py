"""Property-based fuzzing of what a proxy sends the control plane before anything else:
its node (id, cluster, metadata). Whatever arrives, the answer is a proxy or a
ValidationError naming the problem — never another exception (issue 11 part 8)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.errors import ValidationError
from shoal.xds.node import parse_node

KEYS = st.sampled_from(["NAMESPACE", "WORKLOAD", "SERVICE", "APP_PORT", "INBOUND_PORT",
                        "LABELS", "PROTOCOL", "CAPTURE", "UPSTREAMS", "x", ""])
SCALARS = st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) \
    | st.integers(-2**60, 2**60) | st.text(max_size=40)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | KEYS, inner, max_size=4),
                      max_leaves=20)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(node_id=st.text(max_size=80), cluster=st.text(max_size=40),
       metadata=st.dictionaries(KEYS | st.text(max_size=10), VALUES, max_size=8))
def test_any_node_is_a_proxy_or_a_validation_error(node_id: str, cluster: str,
                                                   metadata: dict) -> None:
    md = struct_pb2.Struct()
    json_format.ParseDict(metadata, md)
    node = base_pb2.Node(id=node_id, cluster=cluster, metadata=md)
    try:
        proxy = parse_node(node)
    except ValidationError as e:
        assert e.violations and all(v.message for v in e.violations)
        return
    assert proxy.node_id == node_id


def test_gateways_and_pods_have_no_outbound_port() -> None:
    """OUTBOUND_PORT 0 (gateways; pods use capture ports) is a proxy, not a violation."""
    from shoal.xds.node import node_metadata
    from shoal.xds.types import ProxyMetadata

    md = node_metadata(ProxyMetadata(workload="ingress-1", outbound_port=0), "default")
    proxy = parse_node(base_pb2.Node(id="ingress-1.default", metadata=md))
    assert proxy.metadata.outbound_port == 0 and proxy.metadata.admin_port == 0
    md["OUTBOUND_PORT"] = None
    try:
        parse_node(base_pb2.Node(id="ingress-1.default", metadata=md))
    except ValidationError as e:
        assert "node.metadata.OUTBOUND_PORT: is required" in str(e)
    else:
        raise AssertionError("a missing OUTBOUND_PORT was accepted")
