"""Rules in Envoy's rate-limit service format (``--descriptors``): that service's lookup
semantics, and bad files refused with their paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import ValidationError
from shoal.ratelimit.descriptors import load

TASK = """domain: productpage-ratelimit
descriptors:
- key: PATH
  value: /productpage
  rate_limit: {unit: minute, requests_per_unit: 1}
- key: PATH
  rate_limit: {unit: minute, requests_per_unit: 100}
- key: remote_address
  descriptors:
  - key: user
    value: admin
    rate_limit: {unlimited: true}
  - key: user
    rate_limit: {unit: second, requests_per_unit: 5, name: per-user}
"""


def table(tmp_path: Path, text: str = TASK):
    f = tmp_path / "config.yaml"
    f.write_text(text)
    return load([f])


def test_lookup_as_envoys_service_does(tmp_path: Path) -> None:
    t = table(tmp_path)
    d = "productpage-ratelimit"
    rule, key = t.lookup([("PATH", "/productpage")], d)
    assert (rule.limit, rule.window, key) == (1, 60, f"{d}|PATH_/productpage")
    rule, key = t.lookup([("PATH", "/reviews")], d)  # the key without a value
    assert (rule.limit, key) == (100, f"{d}|PATH_/reviews")  # counted per value
    assert t.lookup([("PATH", "/x")], "another-domain") is None
    assert t.lookup([("HOST", "x")], d) is None
    assert t.lookup([("remote_address", "10.0.0.1")], d) is None  # no limit on that node
    assert t.lookup([("remote_address", "10.0.0.1"), ("user", "admin")], d) is None  # unlimited
    rule, _ = t.lookup([("remote_address", "10.0.0.1"), ("user", "bob")], d)
    assert (rule.id, rule.limit, rule.window) == ("per-user", 5, 1)


@pytest.mark.parametrize(("text", "says"), [
    ("domain: d\ndescriptors: [{key: K, rate_limit: {unit: fortnight, requests_per_unit: 1}}]",
     "unit: must be one of second, minute, hour, day"),
    ("domain: d\ndescriptors: [{key: K, shadow_mode: true}]",
     "descriptors[0].shadow_mode: is not supported"),
    ("descriptors: []", "domain"),
    ("domain: d\ndescriptors: [{rate_limit: {unit: second, requests_per_unit: 1}}]", "key"),
    ("domain: d\ndescriptors: [{key: K, bogus: 1}]", "unknown field"),
])
def test_bad_files_are_refused_with_paths(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ValidationError) as e:
        table(tmp_path, text)
    assert says in str(e.value)


def test_a_domain_twice_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("domain: d\n")
    b.write_text("domain: d\n")
    with pytest.raises(ValidationError, match="configured twice"):
        load([a, b])


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-3, 10) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["domain", "descriptors", "key", "value", "rate_limit",
                                         "unit", "requests_per_unit", "unlimited"]),
                        inner, max_size=4), max_leaves=10))
def test_any_document_loads_or_is_refused_cleanly(tmp_path_factory, doc) -> None:
    import yaml

    f = tmp_path_factory.mktemp("d") / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    try:
        load([f])
    except ValidationError as e:
        assert e.violations
