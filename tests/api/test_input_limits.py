"""Bad input to the readers of the REST surfaces: YAML alias bombs, deep nesting, huge
integers and documents of the wrong shape are each one ValidationError that names the
problem, never another exception, and cost bounded work."""

from __future__ import annotations

import json
import time

import pytest

from shoal.api import limits
from shoal.api.limits import MAX_DEPTH, MAX_INT_DIGITS, MAX_NODES, check_tree, loads_json
from shoal.api.parse import documents_from_json, load_documents, parse_documents
from shoal.errors import ValidationError

SERVICE = {
    "apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service",
    "metadata": {"name": "reviews"},
    "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
}


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    """10**9 scalars from about 1 KB of YAML."""
    lines = ["kind: Service", "a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def messages(err: pytest.ExceptionInfo[ValidationError]) -> str:
    return "; ".join(v.message for v in err.value.violations)


def yaml_error(text: str) -> str:
    with pytest.raises(ValidationError) as err:
        parse_documents(load_documents(text))
    return messages(err)


def json_error(body: str | bytes) -> str:
    with pytest.raises(ValidationError) as err:
        parse_documents(documents_from_json(loads_json(body)))
    return messages(err)


# -- YAML ------------------------------------------------------------------------------


def test_alias_bomb_is_refused_quickly_with_the_limit_named() -> None:
    text = billion_laughs()
    assert len(text) < 2000
    start = time.monotonic()
    with pytest.raises(ValidationError) as err:
        load_documents(text, "bomb.yaml")
    assert time.monotonic() - start < 5  # stopped while counting, not after expanding
    (v,) = err.value.violations
    assert f"more than {MAX_NODES} values" in v.message and "alias" in v.message
    assert v.path.startswith("line ") and v.document == "bomb.yaml"


def test_a_long_string_aliased_many_times_is_refused() -> None:
    text = "a: &a " + "x" * 200_000 + "\nb: [" + ", ".join(["*a"] * 60) + "]\n"
    assert "characters of text" in yaml_error(text)


def test_aliases_count_across_documents_of_one_request() -> None:
    doc = "a: &a [" + ", ".join(["1"] * 100) + "]\nb: [" + ", ".join(["*a"] * 100) + "]\n"
    text = "---\n".join([doc] * 20)  # 10k values each, 200k in all
    assert f"more than {MAX_NODES} values" in yaml_error(text)


def test_modest_aliases_still_work() -> None:
    text = """
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: reviews, labels: &labels {app: reviews, team: books}}
spec:
  selector: *labels
  ports: [{name: http, port: 9080}]
"""
    (r,) = parse_documents(load_documents(text))
    assert r.spec.selector == {"app": "reviews", "team": "books"}


def test_recursive_alias_is_refused() -> None:
    assert "contains it" in yaml_error("a: &a [1, *a]\n")
    assert "contains it" in yaml_error("a: &a {b: 1, c: *a}\n")
    assert "contains it" in yaml_error("&a {b: 1, <<: *a}\n")


@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000,  # flow: a RecursionError without a bound
    "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
    "".join(f"{' ' * i}k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",  # block style
])
def test_deep_nesting_is_refused(text: str) -> None:
    assert f"nested more than {MAX_DEPTH} levels deep" in yaml_error(text)


def test_depth_counts_through_aliases() -> None:
    deep = "[" * (MAX_DEPTH - 2) + "1" + "]" * (MAX_DEPTH - 2)
    ok = f"a: &a {deep}\nb: *a\n"
    assert load_documents(ok)  # the mapping plus MAX_DEPTH - 2: within the limit
    too_deep = f"a: &a {deep}\nb: [[*a]]\n"
    assert f"nested more than {MAX_DEPTH} levels deep" in yaml_error(too_deep)


def test_nesting_at_the_limit_is_accepted() -> None:
    (doc,) = load_documents("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    assert isinstance(doc["a"], list)


@pytest.mark.parametrize("literal", [
    "1" * 5000,  # CPython refuses > 4300 digits with a ValueError
    "1" * (MAX_INT_DIGITS + 1),
    "-" + "9" * (MAX_INT_DIGITS + 1),
    "0x" + "f" * 40,
    "0b" + "1" * 200,
    "1" + ":30" * 5000,  # sexagesimal: quadratic to convert
])
def test_big_integers_are_refused(literal: str) -> None:
    start = time.monotonic()
    message = yaml_error(f"kind: Service\nspec: {{port: {literal}}}\n")
    assert time.monotonic() - start < 2
    assert f"an integer has more than {MAX_INT_DIGITS} digits" in message


def test_integers_up_to_the_limit_are_accepted() -> None:
    (doc,) = load_documents(f"a: {'9' * MAX_INT_DIGITS}\nb: -{'9' * MAX_INT_DIGITS}\n")
    assert doc["a"] == 10 ** MAX_INT_DIGITS - 1


def test_too_many_values_without_aliases() -> None:
    text = "a: [" + ",".join(["1"] * (MAX_NODES + 10)) + "]\n"
    assert f"more than {MAX_NODES} values" in yaml_error(text)


def test_yaml_syntax_errors_say_what_and_where() -> None:
    message = yaml_error("a: &x 1\nb: &x 2\n")
    assert "duplicate anchor" in message
    assert "undefined alias" in yaml_error("a: *nope\n")


@pytest.mark.parametrize(("text", "expect"), [
    ("- 1\n- 2\n", "a document must be a mapping"),
    ("kind: List\nitems: [1, null]\n", "not a number"),
    ("{1: a, b: c, kind: Service}\n", "unknown field"),
    ("kind: Service\nmetadata: null\nspec: {}\n", "metadata: must be a mapping"),
    ("kind: Service\nmetadata: [a]\nspec: {}\n", "metadata: must be a mapping"),
    ("kind: Service\nmetadata: {name: 5}\nspec: []\n", "spec: must be a mapping"),
    ("kind: [Service]\nmetadata: {name: x}\n", "kind: must be one of"),
])
def test_wrong_shapes_in_yaml(text: str, expect: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_documents(load_documents(text))
    assert expect in str(err.value)


# -- JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expect"), [
    ("{}", ["kind: must be one of", "metadata: is required"]),
    ("null", ["a document must be a mapping", "not null"]),
    ("[null]", ["a document must be a mapping", "not null"]),
    ('"x"', ["a document must be a mapping", "not a string"]),
    ("5", ["a document must be a mapping", "not a number"]),
    ("[[]]", ["a document must be a mapping", "not a list"]),
    ('{"kind":"VirtualService","metadata":null}',
     ["metadata: must be a mapping with at least name, not null", "spec: is required"]),
    ('{"kind":"VirtualService","metadata":{"name":["x"]},"spec":"s"}',
     ["metadata.name: Input should be a valid string", "spec: must be a mapping"]),
    ('{"documents": 5}', ["documents: must be a list of documents"]),
    ('{"documents": [true]}', ["not a boolean"]),
    ('{"kind": "List", "items": [[]]}', ["not a list"]),
    ('{"1": 2, "kind": {}}', ["1: unknown field", "kind: must be one of"]),
])
def test_wrong_shapes_in_json(body: str, expect: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        parse_documents(documents_from_json(loads_json(body)))
    text = str(err.value)
    for part in expect:
        assert part in text


def test_a_json_body_may_be_one_document_or_a_list() -> None:
    for body in (SERVICE, [SERVICE], {"documents": [SERVICE]}, {"kind": "List",
                                                                "items": [SERVICE]}):
        (r,) = parse_documents(documents_from_json(loads_json(json.dumps(body))))
        assert r.metadata.name == "reviews"


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,  # a RecursionError in the decoder
    '{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1),
    "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
])
def test_deep_json_is_refused(body: str) -> None:
    assert f"nested more than {MAX_DEPTH} levels deep" in json_error(body)


@pytest.mark.parametrize("body", [
    "1" * 5000,
    '{"port": ' + "1" * (MAX_INT_DIGITS + 1) + "}",
    "[-" + "1" * (MAX_INT_DIGITS + 1) + "]",
])
def test_big_json_integers_are_refused(body: str) -> None:
    assert f"an integer has more than {MAX_INT_DIGITS} digits" in json_error(body)


@pytest.mark.parametrize(("body", "expect"), [
    ("NaN", "NaN is not a JSON number"),
    ("[-Infinity]", "-Infinity is not a JSON number"),
    ("1e999", "out of range"),
    ("1" * 4000 + ".5", "out of range"),
    ("", "invalid JSON"),
    ("{'a': 1}", "invalid JSON"),
    (b"\xff\xfe\xfd", "not UTF-8"),
    ("[" + ",".join(["0"] * (MAX_NODES + 1)) + "]", f"more than {MAX_NODES} values"),
])
def test_malformed_json(body: str | bytes, expect: str) -> None:
    assert expect in json_error(body)


def test_check_tree_is_not_recursive() -> None:
    value: list = []
    for _ in range(50_000):  # deeper than the recursion limit
        value = [value]
    with pytest.raises(ValidationError, match="levels deep"):
        check_tree(value)
    check_tree([[0] * 10] * 10, max_nodes=200)
    with pytest.raises(ValidationError, match="more than 100 values"):
        check_tree([[0] * 10] * 10, max_nodes=100)


def test_limits_are_documented_constants() -> None:
    assert limits.__doc__ and "real user" in limits.__doc__
    assert 64 <= MAX_DEPTH <= 100 and MAX_INT_DIGITS >= 20
    assert limits.MAX_EXPANDED_CHARS <= limits.MAX_APPLY_BODY_BYTES
