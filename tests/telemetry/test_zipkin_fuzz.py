"""Property-based fuzzing of the Zipkin span intake's parser: any JSON is spans or
InvalidSpans (a 400), never another exception (issue 11 part 8)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.telemetry.zipkin import InvalidSpans, otlp_from_zipkin, stored_spans

KEYS = st.sampled_from(["traceId", "id", "parentId", "name", "kind", "timestamp",
                        "duration", "localEndpoint", "remoteEndpoint", "tags",
                        "annotations", "serviceName", "value", "error"])
HEX = st.text(alphabet="0123456789abcdef", min_size=0, max_size=34)
SCALARS = st.none() | st.booleans() | st.floats(allow_nan=False) \
    | st.integers(-2**70, 2**70) | st.text(max_size=20) | HEX
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(KEYS | st.text(max_size=6), inner, max_size=6),
                    max_leaves=30)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(spans=st.lists(JSON, max_size=5))
def test_any_json_is_spans_or_invalid(spans: list) -> None:
    try:
        out = otlp_from_zipkin(spans)
    except InvalidSpans as e:
        assert str(e)
        # the trace store's reading refuses the same batches
        try:
            stored_spans(spans)
        except InvalidSpans:
            return
        raise AssertionError("stored_spans took a batch otlp_from_zipkin refused") from None
    assert sum(len(ss.spans) for rs in out.resource_spans for ss in rs.scope_spans) \
        == len(spans) == len(stored_spans(spans))
