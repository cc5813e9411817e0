"""Route retry policies: the mesh default (ADR 0006) and VirtualService ``retries``."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from google.protobuf import wrappers_pb2

from shoal.api.http_route import HTTPRetry
from shoal.xds.generate.protocol import duration, pack

RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"


def _previous_hosts() -> rc_pb2.RetryPolicy.RetryHostPredicate:
    return rc_pb2.RetryPolicy.RetryHostPredicate(
        name=PREVIOUS_HOSTS, typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()))


def default_retry_policy() -> rc_pb2.RetryPolicy:
    """Istio's default: 2 retries on connect failures, resets and 503s, other hosts first."""
    return rc_pb2.RetryPolicy(
        retry_on=RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=2),
        retriable_status_codes=[503],
        retry_host_predicate=[_previous_hosts()],
        host_selection_retry_max_attempts=5,
    )


def retry_policy(retry: HTTPRetry | None) -> rc_pb2.RetryPolicy | None:
    """A VirtualService's ``retries`` (Istio semantics); ``None`` means no retries at all
    (``attempts: 0``). Numbers in ``retryOn`` are retriable status codes; names are Envoy's
    HTTP and gRPC retry conditions, which Istio passes through."""
    if retry is None:
        return default_retry_policy()
    if retry.attempts == 0:
        return None
    out = default_retry_policy()
    out.num_retries.value = retry.attempts
    if retry.retry_on:
        items = [i.strip() for i in retry.retry_on.split(",") if i.strip()]
        codes = [int(i) for i in items if i.isdigit()]
        names = [i for i in items if not i.isdigit()]
        if codes and "retriable-status-codes" not in names:
            names.append("retriable-status-codes")
        out.retry_on = ",".join(names)
        del out.retriable_status_codes[:]
        out.retriable_status_codes.extend(codes)
    if retry.per_try_timeout:
        out.per_try_timeout.CopyFrom(duration(retry.per_try_timeout.seconds))
    if not retry.retry_ignore_previous_hosts:
        del out.retry_host_predicate[:]
        out.ClearField("host_selection_retry_max_attempts")
    if retry.retry_remote_localities:
        out.retry_priority.CopyFrom(rc_pb2.RetryPolicy.RetryPriority(
            name=PREVIOUS_PRIORITIES,
            typed_config=pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(
                update_frequency=2))))
    return out
