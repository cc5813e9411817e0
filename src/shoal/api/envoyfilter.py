"""EnvoyFilter (``networking.istio.io/v1alpha3``): patches to the generated Envoy config.

Istio's escape hatch, with its field names and semantics (docs/adr/0034). Each
``configPatches`` entry says what to patch (``applyTo``), where (``match``: context,
listener, filter chain, filter, route configuration, virtual host, route, cluster) and how
(``patch``: operation and value). The value is Envoy config in proto3 JSON (``@type`` for
typed configs); it is parsed here, at the API boundary, into the Envoy message the
``applyTo`` implies, so a value Envoy's schema cannot hold is refused with its field path.
What shoal cannot honour is refused by name: never a patch silently ignored.
"""

from __future__ import annotations

import importlib
import pkgutil
from enum import StrEnum
from functools import cache
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import Field, field_validator, model_validator

from shoal.api.mesh import check_labels
from shoal.api.meta import Model
from shoal.api.types import NotSupported


class ApplyTo(StrEnum):
    LISTENER = "LISTENER"
    FILTER_CHAIN = "FILTER_CHAIN"
    NETWORK_FILTER = "NETWORK_FILTER"
    HTTP_FILTER = "HTTP_FILTER"
    ROUTE_CONFIGURATION = "ROUTE_CONFIGURATION"
    VIRTUAL_HOST = "VIRTUAL_HOST"
    HTTP_ROUTE = "HTTP_ROUTE"
    CLUSTER = "CLUSTER"
    EXTENSION_CONFIG = "EXTENSION_CONFIG"
    BOOTSTRAP = "BOOTSTRAP"
    LISTENER_FILTER = "LISTENER_FILTER"


class Context(StrEnum):
    ANY = "ANY"
    SIDECAR_INBOUND = "SIDECAR_INBOUND"
    SIDECAR_OUTBOUND = "SIDECAR_OUTBOUND"
    GATEWAY = "GATEWAY"


class Operation(StrEnum):
    MERGE = "MERGE"
    ADD = "ADD"
    REMOVE = "REMOVE"
    INSERT_BEFORE = "INSERT_BEFORE"
    INSERT_AFTER = "INSERT_AFTER"
    INSERT_FIRST = "INSERT_FIRST"
    REPLACE = "REPLACE"


_ORDERED = {Operation.ADD, Operation.REMOVE, Operation.MERGE, Operation.INSERT_BEFORE,
            Operation.INSERT_AFTER, Operation.INSERT_FIRST, Operation.REPLACE}
# the operations each applyTo supports (Istio's table; shoal refuses the others)
OPERATIONS: dict[ApplyTo, frozenset[Operation]] = {
    ApplyTo.LISTENER: frozenset({Operation.ADD, Operation.REMOVE, Operation.MERGE}),
    ApplyTo.FILTER_CHAIN: frozenset({Operation.ADD, Operation.REMOVE, Operation.MERGE}),
    ApplyTo.NETWORK_FILTER: frozenset(_ORDERED),
    ApplyTo.HTTP_FILTER: frozenset(_ORDERED),
    ApplyTo.ROUTE_CONFIGURATION: frozenset({Operation.MERGE}),
    ApplyTo.VIRTUAL_HOST: frozenset({Operation.ADD, Operation.REMOVE, Operation.MERGE}),
    ApplyTo.HTTP_ROUTE: frozenset({Operation.MERGE, Operation.REMOVE, Operation.INSERT_BEFORE,
                                   Operation.INSERT_AFTER, Operation.INSERT_FIRST}),
    ApplyTo.CLUSTER: frozenset({Operation.ADD, Operation.REMOVE, Operation.MERGE}),
}
# why shoal refuses the others (docs/adr/0034)
REFUSED: dict[ApplyTo, str] = {
    ApplyTo.EXTENSION_CONFIG: "shoal serves no extension configs (ECDS); patch the "
                              "HTTP_FILTER or NETWORK_FILTER itself",
    ApplyTo.BOOTSTRAP: "the bootstrap is written by each workload's agent when Envoy "
                       "starts, not served over xDS; it cannot be patched at run time",
    ApplyTo.LISTENER_FILTER: "not supported by shoal yet",
}
# the Envoy message a patch value is, per applyTo
MESSAGE: dict[ApplyTo, type[Message]] = {
    ApplyTo.LISTENER: listener_pb2.Listener,
    ApplyTo.FILTER_CHAIN: listener_components_pb2.FilterChain,
    ApplyTo.NETWORK_FILTER: listener_components_pb2.Filter,
    ApplyTo.HTTP_FILTER: hcm_pb2.HttpFilter,
    ApplyTo.ROUTE_CONFIGURATION: route_pb2.RouteConfiguration,
    ApplyTo.VIRTUAL_HOST: route_components_pb2.VirtualHost,
    ApplyTo.HTTP_ROUTE: route_components_pb2.Route,
    ApplyTo.CLUSTER: cluster_pb2.Cluster,
}
MAX_PATCHES = 64


@cache
def _load_package(package: str) -> None:
    """Import every ``*_pb2`` module of an Envoy proto package, so ``@type`` names in a
    patch resolve (xds-protos registers a message only when its module is imported)."""
    try:
        mod = importlib.import_module(package)
    except ImportError:
        return
    for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")


def _type_urls(value: Any) -> set[str]:
    if isinstance(value, dict):
        out = {value["@type"]} if isinstance(value.get("@type"), str) else set()
        for v in value.values():
            out |= _type_urls(v)
        return out
    if isinstance(value, list):
        return set().union(*(_type_urls(v) for v in value)) if value else set()
    return set()


def parse_value(apply_to: ApplyTo, value: dict[str, Any]) -> Message:
    """A patch value (proto3 JSON) as the Envoy message of ``apply_to``; ValueError with
    protobuf's reason when it is not one."""
    for url in _type_urls(value):
        full = url.rsplit("/", 1)[-1]
        _load_package(full.rsplit(".", 1)[0])
    out = MESSAGE[apply_to]()
    try:
        json_format.ParseDict(value, out)
    except (json_format.ParseError, TypeError, ValueError) as e:
        raise ValueError(f"not a valid {out.DESCRIPTOR.full_name}: {e}") from None
    return out


class SubFilterMatch(Model):
    name: str = Field(min_length=1)


class FilterMatch(Model):
    name: str = Field(min_length=1)
    sub_filter: SubFilterMatch | None = None


class FilterChainMatch(Model):
    name: str | None = None
    sni: str | None = None
    transport_protocol: str | None = None
    application_protocols: str | None = None
    destination_port: int | None = Field(default=None, ge=1, le=65535)
    filter: FilterMatch | None = None


class ListenerMatch(Model):
    port_number: int | None = Field(default=None, ge=1, le=65535)
    name: str | None = None
    filter_chain: FilterChainMatch | None = None
    listener_filter: NotSupported = None
    port_name: NotSupported = None


class RouteAction(StrEnum):
    ANY = "ANY"
    ROUTE = "ROUTE"
    REDIRECT = "REDIRECT"
    DIRECT_RESPONSE = "DIRECT_RESPONSE"


class RouteMatch(Model):
    name: str | None = None
    action: RouteAction = RouteAction.ANY


class VirtualHostMatch(Model):
    name: str | None = None  # "" or absent: every virtual host (Istio)
    domain_name: str | None = None
    route: RouteMatch | None = None


class RouteConfigurationMatch(Model):
    port_number: int | None = Field(default=None, ge=1, le=65535)
    name: str | None = None
    vhost: VirtualHostMatch | None = None
    port_name: NotSupported = None
    gateway: NotSupported = None


class ClusterMatch(Model):
    port_number: int | None = Field(default=None, ge=1, le=65535)
    service: str | None = None
    subset: str | None = None
    name: str | None = None


class ProxyMatch(Model):
    proxy_version: NotSupported = None
    metadata: NotSupported = None


class ObjectMatch(Model):
    context: Context = Context.ANY
    proxy: ProxyMatch | None = None
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None
    cluster: ClusterMatch | None = None

    @model_validator(mode="after")
    def _one(self) -> ObjectMatch:
        set_ = [k for k in ("listener", "route_configuration", "cluster")
                if getattr(self, k) is not None]
        if len(set_) > 1:
            raise ValueError(f"only one of listener, routeConfiguration or cluster; not {set_}")
        return self


class Patch(Model):
    operation: Operation
    value: dict[str, Any] | None = None
    filter_class: NotSupported = None


class ConfigPatch(Model):
    apply_to: ApplyTo
    match: ObjectMatch = Field(default_factory=ObjectMatch)
    patch: Patch

    @field_validator("apply_to")
    @classmethod
    def _supported(cls, v: ApplyTo) -> ApplyTo:
        if v in REFUSED:
            raise ValueError(f"{v}: {REFUSED[v]}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ConfigPatch:
        op, to = self.patch.operation, self.apply_to
        if op not in OPERATIONS[to]:
            allowed = ", ".join(sorted(OPERATIONS[to]))
            raise ValueError(f"patch.operation: {op} is not supported with applyTo {to} "
                             f"(supported: {allowed})")
        m = self.match
        wants = {ApplyTo.LISTENER: "listener", ApplyTo.FILTER_CHAIN: "listener",
                 ApplyTo.NETWORK_FILTER: "listener", ApplyTo.HTTP_FILTER: "listener",
                 ApplyTo.ROUTE_CONFIGURATION: "route_configuration",
                 ApplyTo.VIRTUAL_HOST: "route_configuration",
                 ApplyTo.HTTP_ROUTE: "route_configuration", ApplyTo.CLUSTER: "cluster"}[to]
        for other in ("listener", "route_configuration", "cluster"):
            if other != wants and getattr(m, other) is not None:
                raise ValueError(f"match.{other}: does not apply to applyTo {to}")
        if op in (Operation.MERGE, Operation.REMOVE, Operation.REPLACE):
            lm = m.listener
            f = lm.filter_chain.filter if lm and lm.filter_chain else None
            if to is ApplyTo.NETWORK_FILTER and f is None:
                raise ValueError(f"match.listener.filterChain.filter.name: is required to "
                                 f"{op} a NETWORK_FILTER (which filter)")
            if to is ApplyTo.HTTP_FILTER and (f is None or f.sub_filter is None):
                raise ValueError(f"match.listener.filterChain.filter.subFilter.name: is "
                                 f"required to {op} an HTTP_FILTER (which filter)")
        if op is Operation.REMOVE:
            if self.patch.value is not None:
                raise ValueError("patch.value: REMOVE takes no value")
        elif self.patch.value is None:
            raise ValueError(f"patch.value: is required with {op}")
        else:
            parse_value(to, self.patch.value)
        return self

    @property
    def value(self) -> Message:
        """The patch value as the Envoy message of ``applyTo`` (parsed again per call:
        callers own the result)."""
        assert self.patch.value is not None
        return parse_value(self.apply_to, self.patch.value)


class WorkloadSelectorLabels(Model):
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)


class EnvoyFilterSpec(Model):
    workload_selector: WorkloadSelectorLabels | None = None
    config_patches: list[ConfigPatch] = Field(default_factory=list, max_length=MAX_PATCHES)
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    target_refs: NotSupported = None
