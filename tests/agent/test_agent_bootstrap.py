"""The bootstrap generator: golden-ish content checks and real-Envoy validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.agent import AgentConfig, UpstreamSpec, bootstrap_for, make_plan
from shoal.agent.bootstrap import (
    HTTP_PROTOCOL_OPTIONS,
    XDS_CLUSTER,
    ZIPKIN_MIN_FLUSH_SPANS,
    build_bootstrap,
)
from shoal.envoy import EnvoyProcess, validate_bootstrap
from shoal.errors import EnvoyError
from shoal.xds.node import parse_node

CONFIG = AgentConfig(
    service="reviews", port=9080, command=("app",), labels={"version": "v2"},
    upstreams=(UpstreamSpec("ratings", 9080, 15001), UpstreamSpec("db", 5432)),
    xds="127.0.0.1:15010", locality="eu/a/1", run_dir=Path("/tmp/x"),
)


def ports():
    it = iter(range(20000, 20100))
    return lambda: next(it)


def test_bootstrap_content():
    plan = make_plan(CONFIG, pick_port=ports(), suffix=lambda: "abcde")
    b = bootstrap_for(CONFIG, plan)
    assert json.loads(json.dumps(b)) == b  # JSON-serialisable as is
    assert b["node"]["id"] == "reviews-abcde.default"
    assert b["node"]["cluster"] == "reviews"
    assert b["node"]["locality"] == {"region": "eu", "zone": "a", "sub_zone": "1"}
    assert b["node"]["metadata"] == {
        "WORKLOAD": "reviews-abcde", "NAMESPACE": "default",
        "OUTBOUND_PORT": plan.outbound_port, "ADMIN_PORT": plan.admin_port,
        "APP_PORTS": {"http": 9080},
        "UPSTREAMS": [{"host": "ratings", "port": 9080, "localPort": 15001},
                      {"host": "db", "port": 5432, "localPort": plan.upstreams[1].local_port}],
    }
    assert b["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": plan.admin_port}
    ads = b["dynamic_resources"]["ads_config"]  # delta by default (ADR 0037)
    assert ads["api_type"] == "DELTA_GRPC" and ads["transport_api_version"] == "V3"
    assert ads["set_node_on_first_message_only"] is True
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]
    assert b["dynamic_resources"]["lds_config"] == {"ads": {}, "resource_api_version": "V3"}
    assert b["dynamic_resources"]["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    xds, sds = b["static_resources"]["clusters"]
    assert sds["name"] == "sds-grpc" and "pipe" in (
        sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"])
    assert "transport_socket" not in xds  # no --ca-bundle: plaintext xDS
    assert xds["name"] == XDS_CLUSTER and xds["type"] == "STATIC"
    assert xds["connect_timeout"] == "1s"
    assert "http2_protocol_options" in (
        xds["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS]["explicit_http_config"])
    assert xds["upstream_connection_options"]["tcp_keepalive"]["keepalive_time"] == 30
    shoal, admin = b["layered_runtime"]["layers"]  # Zipkin batches; /runtime_modify works
    assert shoal["static_layer"] == {"tracing.zipkin.min_flush_spans": ZIPKIN_MIN_FLUSH_SPANS}
    assert admin == {"name": "admin", "admin_layer": {}}
    assert b["stats_flush_on_admin"] is True  # histograms merged when the agent reads them


def test_node_metadata_round_trips_through_the_xds_parser():
    from envoy.config.core.v3 import base_pb2
    from google.protobuf import json_format

    plan = make_plan(CONFIG, pick_port=ports(), suffix=lambda: "abcde")
    node = json_format.ParseDict(bootstrap_for(CONFIG, plan)["node"], base_pb2.Node())
    proxy = parse_node(node)
    assert proxy.node_id == "reviews-abcde.default" and proxy.namespace == "default"
    assert proxy.metadata.outbound_port == plan.outbound_port
    assert proxy.metadata.upstreams == plan.upstreams


def test_dns_control_plane_and_delta_by_default():
    b = build_bootstrap(node_id="a.default", cluster="a", metadata={}, admin_port=1,
                        xds_host="shoald.example", xds_port=15010)
    assert b["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    sotw = build_bootstrap(node_id="a.default", cluster="a", metadata={}, admin_port=1,
                           xds_host="shoald.example", xds_port=15010, delta=False)
    assert sotw["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    assert b["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    assert "locality" not in b["node"]


@pytest.mark.envoy
@pytest.mark.parametrize("xds_host,delta", [("127.0.0.1", False), ("localhost", True)])
def test_bootstrap_is_valid_for_envoy(tmp_path, xds_host, delta):
    plan = make_plan(CONFIG, pick_port=ports(), suffix=lambda: "abcde")
    b = bootstrap_for(CONFIG, plan)
    b2 = build_bootstrap(node_id="x.default", cluster="x", metadata=b["node"]["metadata"],
                         admin_port=0, xds_host=xds_host, xds_port=15010, delta=delta,
                         locality_text="eu/a")
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(b2))
    validate_bootstrap(path)


@pytest.mark.envoy
def test_validate_reports_envoys_reason(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"static_resources": {"clusters": [{"name": "x", "type": "NOPE"}]}}))
    with pytest.raises(EnvoyError, match="NOPE"):
        validate_bootstrap(path)


@pytest.mark.envoy
@pytest.mark.parametrize("delta", [False, True])
async def test_envoy_goes_live_over_ads(tmp_path, ads, delta):
    """The generated bootstrap really fetches LDS+CDS over ADS (SotW and delta)."""
    b = build_bootstrap(node_id="w.default", cluster="w", metadata={"WORKLOAD": "w"},
                        admin_port=0, xds_host="127.0.0.1", xds_port=ads.port, delta=delta)
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(b))
    envoy = EnvoyProcess(path, drain_seconds=1)
    envoy.start()
    try:
        assert await envoy.wait_ready(60)
        assert ads.nodes[0]["id"] == "w.default"
        assert envoy.admin_address() is not None
        assert (tmp_path / "envoy.pid").read_text().strip() == str(envoy.pid)
    finally:
        code = await envoy.astop()
    assert code is not None and not envoy.running
    assert not (tmp_path / "envoy.pid").exists()
