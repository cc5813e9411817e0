"""Access-log entries -- streamed by the sidecars (OTLP logs) or read from a sidecar's own
JSON access log -- in one shape, and a bounded ring per service for the stream.

With ``--access-log-stream`` each sidecar sends one OTLP ``LogRecord`` per HTTP request /
TCP connection; its attributes are the fields of
``shoal.xds.generate.telemetry.HTTP_FIELDS``, its resource says who reported it (Envoy's
built-in ``node_name`` = node id, ``cluster_name`` = the workload's service).
:func:`entries_from_otlp` turns them into flat JSON-able dicts, enriched with
source/destination identity. Every sidecar also writes the same fields as one JSON line
to its stdout (the agent's ``envoy.log``); the agent serves them to the control plane
made into the same entries by :func:`entry_from_line` (:mod:`shoal.agent.access_logs`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from shoal.telemetry.names import Identity, parse_outbound_cluster

Entry = dict[str, Any]
INT_FIELDS = ("status", "duration_ms", "upstream_service_time_ms", "bytes_received",
              "bytes_sent")


def any_value(v: common_pb2.AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def field_of(msg: Any, *names: str) -> Any:
    """A repeated field by its current OTLP name or its older one (xds-protos ships the
    OTLP protos of before ``scope_*``; the wire format is the same)."""
    for name in names:
        if name in msg.DESCRIPTOR.fields_by_name:
            return getattr(msg, name)
    return ()


def attributes(kvs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def _clean(attrs: dict[str, Any]) -> Entry:
    out: Entry = {}
    for k, v in attrs.items():
        if v == "-" or v is None:
            v = ""
        if k in INT_FIELDS:
            try:
                v = int(v) if v != "" else None
            except (TypeError, ValueError, OverflowError):  # e.g. a double infinity
                v = None
        out[k] = v
    return out


def enrich(entry: Entry, reporter: Identity) -> Entry:
    """Add reporter and source/destination identity to a cleaned entry."""
    entry["reporter"] = reporter.node_id
    entry["service"] = reporter.service
    entry["namespace"] = reporter.namespace
    outbound = entry.get("direction") == "outbound"
    dest = parse_outbound_cluster(str(entry.get("upstream_cluster", "")))
    if outbound:
        entry.update(source_workload=reporter.workload, source_namespace=reporter.namespace,
                     source_service=reporter.service,
                     destination_service=dest.fqdn if dest else "",
                     destination_subset=dest.subset if dest else "",
                     destination_workload="")
    else:
        entry.update(source_workload="", source_namespace="", source_service="",
                     destination_service=reporter.service, destination_subset="",
                     destination_workload=reporter.workload)
    entry["mtls"] = bool(entry.get("source_principal") if not outbound
                         else entry.get("destination_principal"))
    return entry


def entry_from_line(line: bytes | str, reporter: Identity) -> Entry | None:
    """One line of a sidecar's JSON access log as an entry shaped like a streamed one;
    None for any other line (Envoy's own log lines, a JSON value that is no access-log
    entry)."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("log") != "access":
        return None
    return enrich(_clean(doc), reporter)


def entries_from_otlp(req: logs_service_pb2.ExportLogsServiceRequest,
                      *, log_name: str = "shoal") -> Iterator[Entry]:
    for rl in req.resource_logs:
        res = attributes(rl.resource.attributes)
        if res.get("log_name", log_name) != log_name:
            continue
        reporter = Identity.from_node(str(res.get("node_name", "")),
                                      str(res.get("cluster_name", "")))
        for sl in field_of(rl, "scope_logs", "instrumentation_library_logs"):
            for rec in field_of(sl, "log_records", "logs"):
                entry = _clean(attributes(rec.attributes))
                entry.setdefault("log", "access")
                yield enrich(entry, reporter)


class AccessLogStore:
    """The last ``per_service`` entries of every service (reported by its sidecars)."""

    def __init__(self, per_service: int = 1000, max_services: int = 1000) -> None:
        self._per_service = per_service
        self._max_services = max_services
        self._rings: dict[str, deque[tuple[int, Entry]]] = {}
        self._seq = 0

    def add(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            key = f"{e.get('service', '')}.{e.get('namespace', '')}"
            ring = self._rings.get(key)
            if ring is None:
                if len(self._rings) >= self._max_services:
                    self._rings.pop(next(iter(self._rings)))
                ring = self._rings[key] = deque(maxlen=self._per_service)
            self._seq += 1
            e["seq"] = self._seq
            ring.append((self._seq, e))

    def services(self) -> list[str]:
        return sorted(self._rings)

    def query(self, service: str | None = None, *, namespace: str | None = None,
              since: int = 0, tail: int = 100) -> list[Entry]:
        """Entries (oldest first) of a service (short name or name.namespace), or all."""
        picked: list[tuple[int, Entry]] = []
        for key, ring in self._rings.items():
            name, _, ns = key.rpartition(".")
            if service and service not in (name, key):
                continue
            if namespace and ns != namespace:
                continue
            picked.extend(x for x in ring if x[0] > since)
        picked.sort(key=lambda x: x[0])
        return [e for _, e in picked[-tail:]] if tail > 0 else [e for _, e in picked]
