"""Property-based fuzzing of the OTLP access-log intake: whatever attributes a sidecar (or
anyone holding a workload certificate) reports, decoding and storing them never raises
and the store stays bounded (issue 11 parts 6 and 8)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from shoal.telemetry.accesslog import AccessLogStore, entries_from_otlp

KEYS = st.sampled_from(["direction", "kind", "status", "duration_ms", "upstream_cluster",
                        "source_workload", "source_namespace", "response_flags",
                        "bytes_received", "bytes_sent", "mtls", "request_protocol",
                        "upstream_service_time_ms", "x"]) | st.text(max_size=12)
VALUES = (st.text(max_size=60).map(lambda s: common_pb2.AnyValue(string_value=s))
          | st.integers(-2**63, 2**63 - 1).map(lambda i: common_pb2.AnyValue(int_value=i))
          | st.booleans().map(lambda b: common_pb2.AnyValue(bool_value=b))
          | st.floats(allow_nan=True).map(lambda f: common_pb2.AnyValue(double_value=f))
          | st.sampled_from(["outbound", "inbound", "tcp", "outbound|9080||web.default.svc"
                             ".cluster.local", "-", "200", "1e309"])
          .map(lambda s: common_pb2.AnyValue(string_value=s)))
RECORD = st.dictionaries(KEYS, VALUES, max_size=10)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(node=st.text(max_size=40), records=st.lists(RECORD, max_size=8))
def test_any_log_batch_is_stored_or_skipped(node: str, records: list[dict]) -> None:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="node_name", value=common_pb2.AnyValue(string_value=node))
    scope = rl.instrumentation_library_logs.add()  # (the otel protos pinned here)
    for attrs in records:
        rec = scope.logs.add()
        for k, v in attrs.items():
            rec.attributes.add(key=k, value=v)
    entries = list(entries_from_otlp(req))
    logs = AccessLogStore()
    logs.add(entries)
    logs.add(entries)
    assert len(logs.query(None, since=0, tail=1000)) <= 2 * len(entries)
