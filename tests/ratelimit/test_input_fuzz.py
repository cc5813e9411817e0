"""Property-based fuzzing of the rate-limit service's decisions: any request a caller can
put on the wire (domains, descriptor entries, hits) is a decision or a ValidationError
(INVALID_ARGUMENT), never another exception, and a refused request moves no counter
(issue 11 part 8)."""

from __future__ import annotations

import asyncio

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api.parse import parse_yaml
from shoal.errors import ValidationError
from shoal.ratelimit.backend import MemoryBackend
from shoal.ratelimit.rules import RuleTable
from shoal.ratelimit.service import RateLimitService

POLICY = """apiVersion: policy.shoal.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: api}
spec:
  host: web
  mode: global
  limits:
  - {name: per-key, perHeader: x-api-key, requestsPerUnit: 5, unit: minute}
  quotas:
  - {name: daily, perHeader: x-api-key, requests: 100, unit: day}
"""
KEYS = st.sampled_from(["shoal_rule", "header", "x-api-key", "generic_key", "", "k"])
TEXT = st.text(max_size=30)


def _service() -> RateLimitService:
    table = RuleTable.build(parse_yaml(POLICY))
    return RateLimitService(MemoryBackend(), lambda: table, clock=lambda: 1_000_000.0)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(domain=TEXT, hits=st.integers(0, 2**32 - 1),
       descriptors=st.lists(st.tuples(
           st.lists(st.tuples(KEYS | TEXT, TEXT), max_size=4),
           st.none() | st.integers(0, 2**64 - 1)), max_size=4))
def test_any_request_is_a_decision_or_invalid(domain: str, hits: int,
                                              descriptors: list) -> None:
    request = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for entries, addend in descriptors:
        d = request.descriptors.add(entries=[
            ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries])
        if addend is not None:
            d.hits_addend.value = addend
    service = _service()
    try:
        response = asyncio.run(service.decide(request))
    except ValidationError as e:  # asked for more than one hit: nothing counted
        assert e.violations
        assert hits > 1 or any(a is not None and a > 1 for _, a in descriptors)
        assert all(q["used"] == 0 for q in asyncio.run(service.quotas()))
        return
    assert len(response.statuses) == len(request.descriptors)
