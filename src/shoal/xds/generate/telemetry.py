"""Telemetry plugin: what every HTTP connection manager and TCP proxy gets for access
logs and tracing, and any cluster the telemetry sinks need.

Pure functions of the generation context; the listener builders call them. Until the
observability work fills them in, they add nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2

from shoal.xds.generate.protocol import NO_EXTRAS, HcmExtras

if TYPE_CHECKING:
    from shoal.xds.generate.context import GenerationContext


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


def http_extras(ctx: GenerationContext, direction: Direction) -> HcmExtras:
    """Access logs and tracing for an HTTP listener of this direction."""
    return NO_EXTRAS


def tcp_access_log(ctx: GenerationContext, direction: Direction
                   ) -> tuple[accesslog_pb2.AccessLog, ...]:
    return ()


def clusters(ctx: GenerationContext) -> Mapping[str, cluster_pb2.Cluster]:
    """Clusters the telemetry sinks need (e.g. the control plane's collectors)."""
    return {}
