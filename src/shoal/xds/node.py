"""Envoy node identity <-> :class:`Proxy`.

The agent writes the node (id + metadata) into the sidecar's bootstrap with
:func:`node_metadata`; the xDS server reads it back with :func:`parse_node`. Keys are
UPPER_SNAKE like Istio's node metadata.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from shoal.errors import ValidationError, Violation
from shoal.registry.snapshot import REGISTERED_BY, MeshSnapshot, has_sidecar
from shoal.xds.types import Proxy, ProxyMetadata, Upstream

INTERCEPTION_REDIRECT = "REDIRECT"  # Istio's name for iptables REDIRECT capture
APP_SOCKET_MAX = 107  # bytes: sun_path (108) less its terminating NUL


@dataclass(frozen=True)
class CaptureMetadata(ProxyMetadata):
    """A sidecar in a pod whose TCP is captured by iptables (docs/hosts.md): the app's
    outbound connections arrive on ``outbound_capture_port``, peers' inbound ones on
    ``inbound_capture_port``, the app's DNS queries (UDP) on ``dns_port``; names outside
    the mesh are forwarded to ``dns_upstreams`` (``IP:PORT``; none: not answered)."""

    outbound_capture_port: int = 15001
    inbound_capture_port: int = 15006
    dns_port: int = 15053
    dns_upstreams: tuple[str, ...] = ()


def capture_of(meta: ProxyMetadata) -> CaptureMetadata | None:
    return meta if isinstance(meta, CaptureMetadata) else None


def node_id(workload: str, namespace: str) -> str:
    return f"{workload}.{namespace}"


@dataclass(frozen=True)
class NodeOwner:
    """Who may be the proxy of a registered workload (docs/adr/0020-xds-peer-identity.md)."""

    service_account: str
    mesh_identity: bool  # its sidecar has a mesh certificate (agent-registered or tlsMode)


def node_owners(mesh: Callable[[], MeshSnapshot]) -> Callable[[str, str], NodeOwner | None]:
    """(namespace, workload) -> its owner in the current mesh, None if not registered."""
    def owner(namespace: str, workload: str) -> NodeOwner | None:
        w = mesh().workload(namespace, workload)
        if w is None:
            return None
        by_agent = w.metadata.annotations.get(REGISTERED_BY) == "agent"
        return NodeOwner(str(w.spec.service_account), by_agent or has_sidecar(w))
    return owner


def node_metadata(meta: ProxyMetadata, namespace: str) -> dict[str, Any]:
    """The JSON-able metadata the agent puts in the bootstrap's ``node.metadata``."""
    capture: dict[str, Any] = {}
    if (c := capture_of(meta)) is not None:
        capture = {"INTERCEPTION_MODE": INTERCEPTION_REDIRECT, "CAPTURE_PORTS": {
            "outbound": c.outbound_capture_port, "inbound": c.inbound_capture_port,
            "dns": c.dns_port}, "DNS_UPSTREAMS": list(c.dns_upstreams)}
    socket = {"APP_SOCKET": meta.app_socket} if meta.app_socket else {}
    return {
        **capture,
        **socket,
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
    if md.get("OUTBOUND_PORT") is None:  # 0 for gateways and pods (capture ports instead)
        problems.append(Violation("node.metadata.OUTBOUND_PORT", "is required"))
    outbound = _port(md.get("OUTBOUND_PORT"), "OUTBOUND_PORT", problems)
    admin = _port(md.get("ADMIN_PORT"), "ADMIN_PORT", problems)
    ports = md.get("APP_PORTS") or {}
    if not isinstance(ports, dict):
        problems.append(Violation("node.metadata.APP_PORTS", "must be a map of name to port"))
        ports = {}
    app_ports = {str(k): _port(v, f"APP_PORTS.{k}", problems, required=True)
                 for k, v in ports.items()}
    items = md.get("UPSTREAMS") or []
    if not isinstance(items, list):
        problems.append(Violation("node.metadata.UPSTREAMS", "must be a list"))
        items = []
    upstreams = []
    for i, u in enumerate(items):
        if not isinstance(u, dict) or not isinstance(u.get("host"), str):
            problems.append(
                Violation(f"node.metadata.UPSTREAMS[{i}]", "needs host, port and localPort"))
            continue
        upstreams.append(Upstream(u["host"], _port(u.get("port"), f"UPSTREAMS[{i}].port",
                                                   problems, required=True),
                                  _port(u.get("localPort"), f"UPSTREAMS[{i}].localPort",
                                        problems, required=True)))
    if not node.id:
        problems.append(Violation("node.id", "is required"))
    capture_ports = _capture_ports(md, problems)
    dns_upstreams = _dns_upstreams(md, problems)
    app_socket = _app_socket(md, problems, capture=capture_ports is not None)
    if problems:
        raise ValidationError(problems)
    meta = ProxyMetadata(
        workload=workload,
        outbound_port=outbound,
        app_ports=app_ports,
        upstreams=tuple(upstreams),
        admin_port=admin,
        app_socket=app_socket,
    )
    if capture_ports is not None:
        meta = CaptureMetadata(
            workload=workload, outbound_port=outbound, app_ports=app_ports,
            upstreams=tuple(upstreams), admin_port=admin,
            outbound_capture_port=capture_ports["outbound"],
            inbound_capture_port=capture_ports["inbound"], dns_port=capture_ports["dns"],
            dns_upstreams=dns_upstreams)
    return Proxy(node_id=node.id, namespace=namespace, metadata=meta)


def _port(value: Any, key: str, problems: list[Violation], *, required: bool = False) -> int:
    """A port number from metadata (JSON numbers arrive as floats); 0 when absent (or 0)
    and not required; every other problem recorded."""
    if not required and (value is None or (value == 0 and not isinstance(value, bool))):
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            int(value) != value or not 0 < value < 65536:
        problems.append(Violation(f"node.metadata.{key}", "must be a port number (1-65535)"))
        return 0
    return int(value)


def dns_upstream(text: str, default_port: int | None = None) -> str:
    """``IPv4:PORT`` (or ``IPv4`` when ``default_port`` is given), normalized to
    ``IP:PORT``; ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError("expected IPv4:PORT")
        host, port = text, str(default_port)
    ip = ipaddress.IPv4Address(host)  # ValueError if not an IPv4 address
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return f"{ip}:{int(port)}"


def _dns_upstreams(md: dict[str, Any], problems: list[Violation]) -> tuple[str, ...]:
    out: list[str] = []
    items = md.get("DNS_UPSTREAMS") or []
    if not isinstance(items, list):
        problems.append(Violation("node.metadata.DNS_UPSTREAMS", "must be a list"))
        return ()
    for i, text in enumerate(items):
        try:
            out.append(dns_upstream(str(text)))
        except ValueError:
            problems.append(Violation(f"node.metadata.DNS_UPSTREAMS[{i}]",
                                      "must be IPv4:PORT"))
    return tuple(out)


def _app_socket(md: dict[str, Any], problems: list[Violation], *, capture: bool) -> str:
    """``APP_SOCKET``: the Unix socket the app listens on (``shoal run --app-socket``);
    "" when absent. An absolute path that fits a ``sun_path``; not with capture."""
    value = md.get("APP_SOCKET")
    if value is None or value == "":
        return ""
    key = "node.metadata.APP_SOCKET"
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        problems.append(Violation(key, "must be an absolute path"))
    elif len(value.encode()) > APP_SOCKET_MAX:
        problems.append(Violation(key, f"must be at most {APP_SOCKET_MAX} bytes long"))
    elif capture:
        problems.append(Violation(key, "is not used with INTERCEPTION_MODE (in a pod the "
                                       "app's port is captured)"))
    else:
        return value
    return ""


def _capture_ports(md: dict[str, Any], problems: list[Violation]) -> dict[str, int] | None:
    mode = md.get("INTERCEPTION_MODE")
    if mode is None:
        return None
    if mode != INTERCEPTION_REDIRECT:
        problems.append(Violation("node.metadata.INTERCEPTION_MODE",
                                  f"must be {INTERCEPTION_REDIRECT!r}"))
        return None
    ports = md.get("CAPTURE_PORTS") or {}
    out = {}
    for key, default in (("outbound", 15001), ("inbound", 15006), ("dns", 15053)):
        value = ports.get(key, default) if isinstance(ports, dict) else None
        if not isinstance(value, (int, float)) or int(value) != value or \
                not 0 < value < 65536:
            problems.append(Violation(f"node.metadata.CAPTURE_PORTS.{key}",
                                      "must be a port number"))
            continue
        out[key] = int(value)
    return out
