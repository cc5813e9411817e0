"""Istio's mesh configuration file (``--mesh-config``, docs/adr/0033): the three shapes
Istio keeps it in, extension providers, and every refusal naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shoal.api.meshconfig import ExtAuthzGrpc, ExtAuthzHttp, load_mesh_config, parse_mesh_config
from shoal.cli.main import app
from shoal.errors import ValidationError

PROVIDERS = """extensionProviders:
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz.foo.svc.cluster.local
    port: 9000
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: ["x-ext-authz"]
"""


def indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


@pytest.mark.parametrize("text", [
    PROVIDERS,
    # the istio ConfigMap, as `kubectl edit configmap istio -n istio-system` shows it
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
    "data:\n  mesh: |-\n" + indent(PROVIDERS, 4) + "\n",
    # an IstioOperator's meshConfig
    "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig:\n"
    + indent(PROVIDERS, 4) + "\n",
])
def test_the_shapes_istio_keeps_it_in(text: str) -> None:
    grpc_, http_ = parse_mesh_config(text).extension_providers
    assert isinstance(grpc_.ext_authz, ExtAuthzGrpc) and grpc_.ext_authz.port == 9000
    assert isinstance(http_.ext_authz, ExtAuthzHttp)
    assert http_.ext_authz.include_request_headers_in_check == ("x-ext-authz",)


@pytest.mark.parametrize(("text", "says"), [
    ("rootNamespace: foo", "rootNamespace: set with shoal control-plane --istio-root-namespace"),
    ("extensionProviders: [{name: z, zipkin: {service: z, port: 9411}}]",
     "provider kind 'zipkin' is not supported by shoal"),
    ("extensionProviders: [{name: a}]", "exactly one of envoyExtAuthzHttp or envoyExtAuthzGrpc"),
    ("extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: a, port: 1}},"
     " {name: a, envoyExtAuthzGrpc: {service: b, port: 1}}]", "duplicate provider name(s) ['a']"),
    ("extensionProviders: [{name: a, envoyExtAuthzHttp: {service: a, port: 70000}}]",
     "extensionProviders[0].envoyExtAuthzHttp.port"),
    ("extensionProviders: [{name: a, envoyExtAuthzHttp: {service: 'a b', port: 1}}]",
     "is not a service host"),
    ("extensionProviders: [{name: a, envoyExtAuthzHttp: {service: a, port: 1,"
     " statusOnError: '299'}}]", "must be an HTTP status code"),
    ("extensionProviders: [{name: a, envoyExtAuthzHttp: {service: a, port: 1,"
     " timeout: soon}}]", "extensionProviders[0].envoyExtAuthzHttp.timeout"),
    ("extensionProviders: [{name: a, envoyExtAuthzHttp: {service: a, port: 1,"
     " headersToUpstreamOnAllow: ['a*b']}}]", "'a*b': a header name, 'prefix*' or '*suffix'"),
    ("extensionProviders: [{name: a, envoyExtAuthzHttp: {service: a, port: 1,"
     " includeHeadersInCheck: [x]}}]", "includeHeadersInCheck: is not supported"),
    ("extensionProviders: [{name: a, envoyExtAuthzHttp: {service: a, port: 1, bogus: 1}}]",
     "extensionProviders[0].envoyExtAuthzHttp.bogus: unknown field"),
    ("kind: Deployment", "kind: must be IstioOperator or ConfigMap"),
    ("- a\n- b", "must be a mapping"),
    ("a: 1\n---\nb: 2", "exactly one document"),
])
def test_refusals_name_the_field(text: str, says: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_mesh_config(text, "mesh.yaml")
    assert says in str(e.value)


def test_the_control_plane_refuses_a_bad_file_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.yaml"
    bad.write_text("extensionProviders: [{name: a, envoyExtAuthzGrpc: {port: 9000}}]\n")
    out = CliRunner().invoke(app, ["control-plane", "--mesh-config", str(bad),
                                   "--data-dir", str(tmp_path / "data")])
    assert out.exit_code == 2
    assert "envoyExtAuthzGrpc.service" in out.output
    with pytest.raises(ValidationError, match="cannot read"):
        load_mesh_config(tmp_path / "missing.yaml")


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["name", "service", "port", "timeout", "failOpen",
                                       "envoyExtAuthzHttp", "envoyExtAuthzGrpc",
                                       "statusOnError", "includeRequestHeadersInCheck",
                                       "pathPrefix", "x"]), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["extensionProviders", "kind", "spec", "data",
                                        "rootNamespace"]), _VALUES, max_size=3))
def test_any_document_parses_or_is_refused_cleanly(doc: dict) -> None:
    try:
        parse_mesh_config(yaml.safe_dump(doc))
    except ValidationError as e:
        assert e.violations
