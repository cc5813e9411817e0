"""What an agent tells the control plane about its proxy's traffic: the per-edge counters
its Envoy keeps (:mod:`shoal.telemetry.envoy_stats`), as **cumulative** values since the
agent started (``incarnation``), carried across restarts of its Envoy, and how long ago
that was (``uptime``, seconds: the control plane places the counters' start on its own
clock, so the counts a proxy made before the control plane first heard of it are counted
in the windows they belong to, docs/adr/0044).

``POST /api/v1/telemetry/stats`` (the agents' listener with the workload certificate, or
the workload's token), about once a second while traffic flows: only the rows that
changed since the last accepted report, or every row (``full``) when the control plane
asks for them (``{"resync": true}``: it does not know this incarnation yet, e.g. after
it restarted; a partial report it answers so is not taken, the full one carries its
counts). Cumulative values make a lost report harmless: the next one carries its
counts. O(edges) per report, never O(requests).

Bounded: at most :data:`MAX_ROWS` rows of each kind per report (a proxy's series are
capped the same way, :data:`shoal.telemetry.counters.MAX_SERIES_PER_NODE`), strings of
bounded length, counters within 0..2**63-1. A report breaking a bound is refused whole
(422) and counted; nothing of it is kept.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from shoal.api.meta import Model
from shoal.telemetry.model import LATENCY_BUCKETS_MS, Reporter

STATS_PATH = "/api/v1/telemetry/stats"
MAX_ROWS = 1_000
MAX_REPORT_BYTES = 2 * 1024 * 1024
MAX_UPTIME = 100 * 365 * 86400.0
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
Text = Annotated[str, StringConstraints(max_length=256)]
Flags = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z,\-]*$")]
Grpc = Annotated[str, StringConstraints(max_length=2, pattern=r"^[0-9]*$")]
NodeId = Annotated[str, StringConstraints(min_length=3, max_length=253,
                                          pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
Label = Annotated[str, StringConstraints(max_length=63,
                                         pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$")]
Token = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                         pattern=r"^[A-Za-z0-9._-]+$")]


class HttpRow(Model):
    reporter: Reporter
    cluster: Text = ""
    code: int = Field(default=0, ge=0, le=999)
    flags: Flags = ""
    peer: Text = ""
    grpc: Grpc = ""
    requests: Count = 0
    request_bytes: Count = 0
    response_bytes: Count = 0
    # cumulative per LATENCY_BUCKETS_MS bound, then the +Inf count
    duration_buckets: Annotated[list[Count], Field(
        min_length=len(LATENCY_BUCKETS_MS) + 1, max_length=len(LATENCY_BUCKETS_MS) + 1)]
    duration_sum_ms: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)


class TcpRow(Model):
    reporter: Reporter
    cluster: Text = ""
    flags: Flags = ""
    peer: Text = ""
    connections: Count = 0
    sent_bytes: Count = 0
    received_bytes: Count = 0


class StatsReport(Model):
    node: NodeId  # <workload>.<namespace>: the caller must be that workload's identity
    incarnation: Token  # a new value each time the agent starts (counters restart)
    # seconds since this incarnation started counting (the control plane places its
    # counters' start on its own clock: no clock skew between hosts); None: not sent
    uptime: float | None = Field(default=None, ge=0.0, le=MAX_UPTIME, allow_inf_nan=False)
    service: Label = ""  # the proxy's service (canonical name), "" for none
    full: bool = False  # every row, not only the changed ones
    http: Annotated[list[HttpRow], Field(max_length=MAX_ROWS)] = []
    tcp: Annotated[list[TcpRow], Field(max_length=MAX_ROWS)] = []
