"""Reading the proxy's access log back from envoy.log (shoal.agent.access_logs): complete
lines only, Envoy's own lines skipped, a cursor that follows, a replaced or truncated
file, and the bound on what one read takes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from shoal.agent.access_logs import Cursor, LocalAccessLog, newest_entries, read_lines
from shoal.telemetry.accesslog import entries_from_otlp, entry_from_line
from shoal.telemetry.agent_logs import MAX_TAIL
from shoal.telemetry.names import Identity

REPORTER = Identity.from_node("web-1.default", "web")
ENVOY_LINE = b"[2025-01-01 10:00:00.000][12][warning][config] [source/x.cc:10] something\n"


def access(i: int, **kw: Any) -> bytes:
    """One line as the sidecar's file logger writes it (shoal.xds.generate.telemetry)."""
    doc = {"log": "access", "kind": "http", "direction": "inbound",
           "start_time": f"2025-01-01T10:00:{i:02d}.000Z", "method": "GET", "path": f"/{i}",
           "status": 200, "response_flags": "-", "duration_ms": 3, "bytes_received": 0,
           "bytes_sent": 12, "upstream_cluster": "inbound|8080|http",
           "source_principal": "spiffe://cluster.local/ns/default/sa/client",
           "request_id": f"id-{i}", "trace_id": None, **kw}
    return json.dumps(doc).encode() + b"\n"


def paths(page: dict[str, Any]) -> list[str]:
    return [e["path"] for e in page["entries"]]


def test_only_complete_access_lines_and_the_cursor_stops_before_a_partial_one(
        tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    partial = access(3)[:25]
    log.write_bytes(ENVOY_LINE + access(1) + b'{"not": "an access line"}\n' + b"[1, 2]\n"
                    + b"\xff\xfe not utf-8\n" + access(2) + partial)
    reader = LocalAccessLog(log, REPORTER)
    page = reader.read(None, 100)
    assert paths(page) == ["/1", "/2"]
    cursor = Cursor.parse(page["cursor"])
    assert cursor.inode == os.stat(log).st_ino
    assert cursor.offset == log.stat().st_size - len(partial)
    # the rest of the partial line arrives: it is read whole, once
    with open(log, "ab") as f:
        f.write(access(3)[25:] + ENVOY_LINE)
    again = reader.read(cursor, 100)
    assert paths(again) == ["/3"]
    assert reader.read(Cursor.parse(again["cursor"]), 100)["entries"] == []


def test_entries_have_the_streamed_entries_shape(tmp_path: Path) -> None:
    entry = entry_from_line(access(7, direction="outbound",
                                   upstream_cluster="outbound|9080||db.default.svc.cluster.local",
                                   destination_principal="spiffe://x/ns/default/sa/db"),
                            REPORTER)
    assert entry is not None
    assert entry["reporter"] == "web-1.default" and entry["service"] == "web"
    assert entry["namespace"] == "default" and entry["source_workload"] == "web-1"
    assert entry["destination_service"] == "db.default.svc.cluster.local"
    assert entry["response_flags"] == "" and entry["trace_id"] == ""  # "-" and null: ""
    assert entry["status"] == 200 and entry["mtls"] is True
    # the same fields, streamed: the same entry
    raw = json.loads(access(7, direction="outbound",
                            upstream_cluster="outbound|9080||db.default.svc.cluster.local",
                            destination_principal="spiffe://x/ns/default/sa/db"))
    attrs = [common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(
        string_value="-" if v is None else str(v))) for k, v in raw.items() if k != "log"]
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([
        common_pb2.KeyValue(key="node_name", value=common_pb2.AnyValue(
            string_value="web-1.default")),
        common_pb2.KeyValue(key="cluster_name", value=common_pb2.AnyValue(string_value="web"))])
    scope = rl.scope_logs.add() if "scope_logs" in rl.DESCRIPTOR.fields_by_name \
        else rl.instrumentation_library_logs.add()
    records = scope.log_records if hasattr(scope, "log_records") else scope.logs
    records.add().attributes.extend(attrs)
    (streamed,) = entries_from_otlp(req)
    assert streamed == entry
    for other in (b"", b"null", b"{}", b'{"log": "envoy"}', ENVOY_LINE, b"[" * 100_000):
        assert entry_from_line(other, REPORTER) is None


def test_tail_keeps_the_newest_and_is_capped(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    log.write_bytes(b"".join(access(i % 60, path=f"/{i}") + ENVOY_LINE
                             for i in range(MAX_TAIL + 20)))
    reader = LocalAccessLog(log, REPORTER)
    assert paths(reader.read(None, 3)) == [f"/{i}" for i in range(MAX_TAIL + 17,
                                                                    MAX_TAIL + 20)]
    assert len(reader.read(None, 0)["entries"]) == MAX_TAIL  # 0: as many as allowed
    assert len(reader.read(None, 10 * MAX_TAIL)["entries"]) == MAX_TAIL
    lines = [access(i) for i in range(5)]
    assert [e["path"] for e in newest_entries(lines, REPORTER, 2)] == ["/3", "/4"]


def test_a_read_takes_at_most_max_bytes_and_starts_at_a_line(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    lines = [access(i % 60, path=f"/{i}") for i in range(200)]
    log.write_bytes(b"".join(lines))
    size = len(lines[0])  # the shortest; the last ten are 2 bytes longer each
    reader = LocalAccessLog(log, REPORTER, max_bytes=10 * size + size // 2)
    got = paths(reader.read(None, 1000))
    assert got == [f"/{i}" for i in range(190, 200)]  # the cut line before them dropped
    # exactly at a line's start: that line is kept
    exact = sum(len(x) for x in lines[-4:])
    assert paths(LocalAccessLog(log, REPORTER, max_bytes=exact).read(None, 1000)) == [
        f"/{i}" for i in range(196, 200)]
    # a follower far behind gets the newest part only, and goes on from the end
    behind = Cursor(os.stat(log).st_ino, 0)
    page = reader.read(behind, 1000)
    assert paths(page) == [f"/{i}" for i in range(190, 200)]
    assert Cursor.parse(page["cursor"]).offset == log.stat().st_size


def test_a_line_longer_than_a_read_is_skipped_not_stuck_on(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    log.write_bytes(access(1) + b"x" * 5000 + b"\n" + access(2))
    reader = LocalAccessLog(log, REPORTER, max_bytes=1000)
    page = reader.read(None, 10)
    assert paths(page) == ["/2"]
    # a cursor in the middle of a line: the rest of that line is not a line
    inode = os.stat(log).st_ino
    mid = len(access(1)) + 100
    assert paths(LocalAccessLog(log, REPORTER).read(Cursor(inode, mid), 10)) == ["/2"]
    # no newline at all within the read: nothing, and the cursor moves past it
    log.write_bytes(access(1) + b"y" * 5000)
    page = reader.read(Cursor(os.stat(log).st_ino, len(access(1)) + 10), 10)
    assert page["entries"] == [] and Cursor.parse(page["cursor"]).offset == log.stat().st_size


def test_a_replaced_or_truncated_file_starts_over(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    log.write_bytes(access(1) + access(2))
    reader = LocalAccessLog(log, REPORTER)
    cursor = Cursor.parse(reader.read(None, 10)["cursor"])
    # replaced (a new inode): everything in the new file is new
    new = tmp_path / "envoy.log.new"
    new.write_bytes(access(3) + access(4))
    keep = tmp_path / "old"  # keep the old inode alive so that it cannot be reused
    os.link(log, keep)
    os.replace(new, log)
    assert os.stat(log).st_ino != cursor.inode
    page = reader.read(cursor, 10)
    assert paths(page) == ["/3", "/4"]
    # truncated (the cursor beyond the end): start over from the bounded tail
    cursor = Cursor.parse(page["cursor"])
    log.write_bytes(access(5))  # same inode, shorter
    assert os.stat(log).st_ino == cursor.inode and cursor.offset > log.stat().st_size
    assert paths(reader.read(cursor, 10)) == ["/5"]
    # a cursor far beyond the end of another file
    assert paths(reader.read(Cursor(cursor.inode + 1, 10**12), 10)) == ["/5"]


def test_no_file_yet(tmp_path: Path) -> None:
    reader = LocalAccessLog(tmp_path / "envoy.log", REPORTER)
    page = reader.read(None, 10)
    assert page["entries"] == []
    (tmp_path / "envoy.log").write_bytes(access(1))
    assert paths(reader.read(Cursor.parse(page["cursor"]), 10)) == ["/1"]


def test_cursor_parsing() -> None:
    assert Cursor.parse(str(Cursor(12, 34))) == Cursor(12, 34)
    for bad in ("", "1", "1:", ":1", "a:1", "1:-1", "1:2:3", " 1:2", "1:2 ", "²:1",
                "1" * 30 + ":1"):
        with pytest.raises(ValueError):
            Cursor.parse(bad)


def test_read_lines_is_bounded_by_max_bytes(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    log.write_bytes(b"a\n" * 10_000)
    got = read_lines(log, None, max_bytes=100)
    assert len(got.lines) == 50 and all(x == b"a" for x in got.lines)
    assert got.cursor.offset == 20_000
