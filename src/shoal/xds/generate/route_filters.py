"""HTTP filters that act on per-route config: fault injection and CORS.

The filters sit in the outbound HTTP connection managers **disabled** (``disabled: true``),
and a route that has a fault or CORS policy enables them with its
``typed_per_filter_config`` (Envoy's route-based filter chain). A request on any other
route never instantiates them (docs/adr/0029), and a route change is still only an RDS
push, never a listener drain. Envoy applies per-route config only for a filter that is in
the chain, so every outbound HCM must carry :data:`TRAFFIC_EXTRAS`.
"""

from __future__ import annotations

from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from shoal.api.http_route import GRPC_CODES, CorsPolicy, HTTPFaultInjection
from shoal.xds.generate.matches import string_matcher
from shoal.xds.generate.protocol import HcmExtras, duration, pack

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"


def fault_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault()),
                              disabled=True)


def cors_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors()), disabled=True)


# CORS first (a preflight is answered before any fault applies), as in Istio.
TRAFFIC_EXTRAS = HcmExtras(http_filters=(cors_filter(), fault_filter()))


def fraction(percent: float) -> percent_pb2.FractionalPercent:
    """A percentage (0-100, fractions allowed) with a per-million denominator."""
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000), denominator=percent_pb2.FractionalPercent.MILLION)


def fault_config(fault: HTTPFaultInjection) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        assert fault.delay.fixed_delay is not None
        out.delay.CopyFrom(common_fault_pb2.FaultDelay(
            fixed_delay=duration(fault.delay.fixed_delay.seconds),
            percentage=fraction(fault.delay.fraction())))
    if fault.abort is not None:
        abort = fault_pb2.FaultAbort(percentage=fraction(fault.abort.fraction()))
        if fault.abort.http_status is not None:
            abort.http_status = fault.abort.http_status
        else:
            assert fault.abort.grpc_status is not None
            abort.grpc_status = GRPC_CODES[fault.abort.grpc_status]
        out.abort.CopyFrom(abort)
    return out


def cors_config(policy: CorsPolicy) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(m) for m in policy.allow_origins],
        allow_methods=",".join(policy.allow_methods),
        allow_headers=",".join(policy.allow_headers),
        expose_headers=",".join(policy.expose_headers),
    )
    if policy.max_age is not None:
        out.max_age = str(round(policy.max_age.seconds))
    if policy.allow_credentials is not None:
        out.allow_credentials.CopyFrom(wrappers_pb2.BoolValue(value=policy.allow_credentials))
    return out
