"""Envoy node identity <-> :class:`Proxy`.

The agent writes the node (id + metadata) into the sidecar's bootstrap with
:func:`node_metadata`; the xDS server reads it back with :func:`parse_node`. Keys are
UPPER_SNAKE like Istio's node metadata.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from shoal.errors import ValidationError, Violation
from shoal.xds.types import Proxy, ProxyMetadata, Upstream


def node_id(workload: str, namespace: str) -> str:
    return f"{workload}.{namespace}"


def node_metadata(meta: ProxyMetadata, namespace: str) -> dict[str, Any]:
    """The JSON-able metadata the agent puts in the bootstrap's ``node.metadata``."""
    return {
        "WORKLOAD": meta.workload,
        "NAMESPACE": namespace,
        "OUTBOUND_PORT": meta.outbound_port,
        "ADMIN_PORT": meta.admin_port,
        "APP_PORTS": dict(meta.app_ports),
        "UPSTREAMS": [
            {"host": u.host, "port": u.port, "localPort": u.local_port} for u in meta.upstreams
        ],
    }


def parse_node(node: base_pb2.Node) -> Proxy:
    """Read a :class:`Proxy` from an xDS request's node; every problem is reported."""
    md = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    problems: list[Violation] = []

    def need(key: str, kind: type) -> Any:
        value = md.get(key)
        if value is None:
            problems.append(Violation(f"node.metadata.{key}", "is required"))
            return kind()
        if kind is int:
            if not isinstance(value, (int, float)) or int(value) != value:
                problems.append(Violation(f"node.metadata.{key}", "must be an integer"))
                return 0
            return int(value)
        if not isinstance(value, kind):
            problems.append(Violation(f"node.metadata.{key}", f"must be a {kind.__name__}"))
            return kind()
        return value

    workload = need("WORKLOAD", str)
    namespace = need("NAMESPACE", str)
    outbound = need("OUTBOUND_PORT", int)
    admin = int(md.get("ADMIN_PORT") or 0)
    app_ports = {str(k): int(v) for k, v in (md.get("APP_PORTS") or {}).items()}
    upstreams = []
    for i, u in enumerate(md.get("UPSTREAMS") or []):
        try:
            upstreams.append(Upstream(str(u["host"]), int(u["port"]), int(u["localPort"])))
        except (KeyError, TypeError, ValueError):
            problems.append(
                Violation(f"node.metadata.UPSTREAMS[{i}]", "needs host, port and localPort")
            )
    if not node.id:
        problems.append(Violation("node.id", "is required"))
    if problems:
        raise ValidationError(problems)
    meta = ProxyMetadata(
        workload=workload,
        outbound_port=outbound,
        app_ports=app_ports,
        upstreams=tuple(upstreams),
        admin_port=admin,
    )
    return Proxy(node_id=node.id, namespace=namespace, metadata=meta)
