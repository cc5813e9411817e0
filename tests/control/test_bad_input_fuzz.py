"""Bad input against a real control plane process: the reproduced attacks of issue 11
(alias bomb, deep nesting, huge integers, JSON of the wrong shape) each answer a 4xx that
names the problem and store nothing, and random JSON and YAML (hypothesis, a fixed and
derandomized budget) never answer a 5xx nor take the process down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.api.limits import MAX_APPLY_BODY_BYTES, MAX_DEPTH, MAX_INT_DIGITS, MAX_NODES
from shoal.testing.local import ControlPlaneProcess

APPLY = "/api/v1/apply"
TOKENS = "/api/v1/tokens"
SPANS = "/api/v2/spans"
JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    with ControlPlaneProcess(tmp_path_factory.mktemp("bad-input")) as cp:
        yield cp


@pytest.fixture(scope="module")
def http(cp: ControlPlaneProcess) -> Iterator[httpx.Client]:
    with cp.http(timeout=30.0) as client:
        yield client


def revision(http: httpx.Client) -> int:
    resp = http.get("/api/v1/resources")
    assert resp.status_code == 200, resp.text
    return int(resp.json()["revision"])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def refused(resp: httpx.Response, status: int = 422) -> str:
    """The response is STATUS with a JSON ``error``; returns error and violations as text."""
    assert resp.status_code == status, resp.text[:500]
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"]
    violations = [f"{v['path']}: {v['message']}" if v["path"] else v["message"]
                  for v in body.get("violations", [])]
    return "; ".join([body["error"], *violations])


def billion_laughs() -> str:
    lines = ["apiVersion: mesh.shoal.io/v1alpha1", "kind: Service",
             "metadata: {name: lol}",
             "l0: &l0 [" + ", ".join(['"lol lol lol lol lol lol lol lol"'] * 10) + "]"]
    for i in range(1, 12):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\nspec: {selector: {app: lol}, ports: [{name: http, port: 80}]}\n"


# -- the reproduced attacks -----------------------------------------------------------


def test_yaml_alias_bomb_is_refused_with_memory_bounded(cp: ControlPlaneProcess,
                                                        http: httpx.Client) -> None:
    before, rss = revision(http), rss_bytes(cp.pid)
    bomb = billion_laughs()
    assert len(bomb) < 10_000
    for _ in range(3):
        message = refused(http.post(APPLY, content=bomb, headers=YAML))
        assert f"more than {MAX_NODES} values" in message and "alias" in message
    assert rss_bytes(cp.pid) - rss < 100 * 1024 * 1024
    assert revision(http) == before


@pytest.mark.parametrize(("body", "headers"), [
    ("[" * 100_000 + "]" * 100_000, JSON),
    ('{"a":' * 5_000 + "1" + "}" * 5_000, JSON),
    ("[" * 100_000 + "]" * 100_000, YAML),
    ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), YAML),
    ("".join(f"{' ' * i}k{i}:\n" for i in range(300)) + " " * 300 + "v: 1\n", YAML),
])
def test_deep_nesting_is_refused(http: httpx.Client, body: str, headers: dict) -> None:
    before = revision(http)
    assert f"nested more than {MAX_DEPTH} levels deep" in refused(
        http.post(APPLY, content=body, headers=headers))
    assert revision(http) == before


@pytest.mark.parametrize(("body", "headers"), [
    ('{"apiVersion": "mesh.shoal.io/v1alpha1", "kind": "Service", "metadata": {"name": "x"},'
     ' "spec": {"ports": [{"name": "http", "port": ' + "1" * 5000 + "}]}}", JSON),
    ("1" * 5000, JSON),
    ("kind: Service\nspec: {ports: [{port: " + "9" * 5000 + "}]}\n", YAML),
    ("a: " + "1" * (MAX_INT_DIGITS + 1), YAML),
])
def test_big_integers_are_refused(http: httpx.Client, body: str, headers: dict) -> None:
    before = revision(http)
    assert f"an integer has more than {MAX_INT_DIGITS} digits" in refused(
        http.post(APPLY, content=body, headers=headers))
    assert revision(http) == before


@pytest.mark.parametrize(("body", "expect"), [
    ("{}", "kind: must be one of"),
    ("null", "not null"),
    ("[null]", "not null"),
    ('"x"', "not a string"),
    ("5", "not a number"),
    ("[[]]", "not a list"),
    ('{"kind":"VirtualService","metadata":null}', "must be a mapping with at least name"),
    ('{"kind":"Service","metadata":{"name":5},"spec":[]}', "spec: must be a mapping"),
    ('{"documents": {"kind": "Service"}}', "must be a list of documents"),
    ("[]", "no documents to apply"),
    ("NaN", "NaN is not a JSON number"),
    ("", "invalid JSON"),
])
def test_json_of_the_wrong_shape_is_refused(http: httpx.Client, body: str, expect: str
                                            ) -> None:
    before = revision(http)
    resp = http.post(APPLY, content=body, headers=JSON)
    message = refused(resp)
    assert expect in message
    if expect not in ("no documents to apply",):
        assert all(v["message"] for v in resp.json()["violations"])
    assert revision(http) == before


def test_bodies_that_are_not_text_are_refused(http: httpx.Client) -> None:
    before = revision(http)
    assert "not utf-8 text" in refused(http.post(APPLY, content=b"kind: \xff\xfe\n",
                                                 headers=YAML))
    assert "not bogus text" in refused(http.post(
        APPLY, content=b"kind: x", headers={"Content-Type": "application/yaml; charset=bogus"}))
    assert revision(http) == before


def test_too_large_bodies_answer_413(http: httpx.Client) -> None:
    before = revision(http)
    big = b"# " + b"x" * MAX_APPLY_BODY_BYTES + b"\n"
    assert "too large" in refused(http.post(APPLY, content=big, headers=YAML), 413)
    chunked = http.post(APPLY, content=iter([big[:1 << 20]] * 9), headers=YAML)
    assert "too large" in refused(chunked, 413)
    assert "too large" in refused(http.post(TOKENS, content=b" " * (2 << 20), headers=JSON),
                                  413)
    assert revision(http) == before


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,
    '{"namespace": "default", "serviceAccount": "a", "ttlSeconds": ' + "1" * 5000 + "}",
    '{"namespace": "default", "serviceAccount": "a", "ttlSeconds": Infinity}',
    "[1, 2]",
    "null",
])
def test_other_json_routes_are_bounded_too(http: httpx.Client, body: str) -> None:
    refused(http.post(TOKENS, content=body, headers=JSON))


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,
    '[{"traceId": "1", "id": "2", "timestamp": ' + "1" * 5000 + "}]",
    '[{"traceId": "1", "id": "2", "timestamp": NaN}]',
    '[{"traceId": "1", "id": "2", "timestamp": 1e999}]',
])
def test_zipkin_spans_are_bounded(http: httpx.Client, body: str) -> None:
    resp = http.post(SPANS, content=body, headers=JSON)
    assert resp.status_code == 400, resp.text[:300]
    assert "body must be a JSON list of spans" in resp.json()["error"]


# -- random input ---------------------------------------------------------------------

KEYS = st.sampled_from(["apiVersion", "kind", "metadata", "spec", "name", "namespace",
                        "labels", "documents", "items", "status", "ports", "hosts", "http",
                        "route", "selector"]) | st.text(max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=20) | st.sampled_from(["Service", "VirtualService", "List",
                                                     "mesh.shoal.io/v1alpha1",
                                                     "networking.istio.io/v1"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25)
ENVELOPES = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["mesh.shoal.io/v1alpha1", "networking.istio.io/v1"]),
     "kind": st.sampled_from(["Service", "VirtualService", "DestinationRule", "Workload",
                              "List"]),
     "metadata": VALUES | st.fixed_dictionaries({"name": VALUES | st.just("fuzz")})},
    optional={"spec": VALUES, "items": VALUES})
TOKEN_REQUESTS = st.fixed_dictionaries({}, optional={
    "namespace": VALUES | st.sampled_from(["default", "Default", "a/b", ""]),
    "serviceAccount": VALUES | st.sampled_from(["reviews", "x" * 300, "a b"]),
    "ttlSeconds": VALUES | st.floats(min_value=0, max_value=1e12),
    "user": VALUES | st.sampled_from(["fuzzer", ""]),
    "grants": VALUES | st.lists(st.sampled_from(["admin", "view:default", "edit:*", "x:y:z"]))})
YAML_BITS = st.sampled_from([
    "a:", "kind: Service", " ", "  ", "-", "- ", "&x ", "*x", "[", "]", "{", "}", ",", "\n",
    "1", "0x1F", "1:30", "'", '"', "!!int ", "!!binary ", "!!set ", "!!python/object ",
    "? ", ": ", "<<: *x", "---\n", "...\n", "#", "|", ">", "\t", "~", ".inf", "2001-12-14"])
YAML_TEXT = st.lists(YAML_BITS, max_size=40).map("".join) | st.text(max_size=200)


@FUZZ
@given(body=VALUES | ENVELOPES | st.lists(ENVELOPES, max_size=3))
def test_random_json_to_apply_never_5xx(http: httpx.Client, body: Any) -> None:
    resp = http.post(APPLY, content=json.dumps(body), headers=JSON,
                     params={"dryRun": "true"})
    assert resp.status_code < 500, resp.text[:500]


@FUZZ
@given(text=YAML_TEXT)
def test_random_yaml_to_apply_never_5xx(http: httpx.Client, text: str) -> None:
    resp = http.post(APPLY, content=text.encode("utf-8", "surrogatepass"), headers=YAML,
                     params={"dryRun": "true"})
    assert resp.status_code < 500, resp.text[:500]


@FUZZ
@given(body=VALUES | TOKEN_REQUESTS)
def test_random_json_to_tokens_never_5xx(http: httpx.Client, body: Any) -> None:
    resp = http.post(TOKENS, content=json.dumps(body), headers=JSON)
    assert resp.status_code < 500, resp.text[:500]


def test_still_alive_and_ready(cp: ControlPlaneProcess, http: httpx.Client) -> None:
    assert cp.alive()
    resp = http.get("/readyz")
    assert resp.status_code == 200 and resp.json()["status"] == "ready"
