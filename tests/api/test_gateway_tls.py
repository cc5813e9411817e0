"""Gateway server TLS modes, TLS service ports and the gateway's credential flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.api import parse_yaml
from shoal.api.mesh import Protocol
from shoal.errors import AgentError, ValidationError
from shoal.gateway.agent import Credential, parse_credential, static_secrets


def gateway(server: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
            f"spec:\n  selector: {{istio: g}}\n  servers:\n  - {server}\n")


def error_of(text: str) -> str:
    with pytest.raises(ValidationError) as e:
        parse_yaml(text)
    return " | ".join(f"{v.path}: {v.message}" for v in e.value.violations)


@pytest.mark.parametrize("server", [
    "{port: {number: 443, name: h, protocol: HTTPS}, hosts: [a.com], "
    "tls: {mode: MUTUAL, credentialName: c, subjectAltNames: [client.a.com]}}",
    "{port: {number: 443, name: h, protocol: HTTPS}, hosts: [a.com], "
    "tls: {mode: OPTIONAL_MUTUAL, credentialName: c}}",
    "{port: {number: 443, name: h, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL}}",
    "{port: {number: 15443, name: t, protocol: TLS}, hosts: ['*.local'], "
    "tls: {mode: AUTO_PASSTHROUGH}}",
    "{port: {number: 443, name: t, protocol: TLS}, hosts: [a.com], tls: {mode: PASSTHROUGH}}",
])
def test_supported_tls_modes_parse(server: str) -> None:
    [gw] = parse_yaml(gateway(server))
    assert gw.spec.servers[0].tls is not None


@pytest.mark.parametrize(("server", "error"), [
    ("{port: {number: 443, name: h, protocol: HTTPS}, hosts: [a.com], tls: {mode: MUTUAL}}",
     "tls mode MUTUAL needs credentialName"),
    ("{port: {number: 443, name: t, protocol: TLS}, hosts: [a.com], "
     "tls: {mode: SIMPLE, credentialName: c}}", "passes TLS through only"),
    ("{port: {number: 443, name: h, protocol: HTTPS}, hosts: [a.com], "
     "tls: {mode: AUTO_PASSTHROUGH}}", "use protocol TLS"),
    ("{port: {number: 443, name: t, protocol: TLS}, hosts: ['*'], "
     "tls: {mode: AUTO_PASSTHROUGH, credentialName: c}}", "credentialName is not used"),
    ("{port: {number: 443, name: h, protocol: HTTPS}, hosts: [a.com], "
     "tls: {mode: SIMPLE, credentialName: c, subjectAltNames: [x]}}", "subjectAltNames"),
    ("{port: {number: 443, name: h, protocol: HTTPS}, hosts: [a.com], "
     "tls: {mode: MUTUAL, credentialName: c, caCertificates: /x.pem}}", "caCertificates"),
])
def test_unsupported_combinations_are_rejected_by_name(server: str, error: str) -> None:
    assert error in error_of(gateway(server))


def test_tls_and_https_service_ports_are_opaque_tls() -> None:
    [svc] = parse_yaml("apiVersion: mesh.shoal.io/v1alpha1\nkind: Service\n"
                       "metadata: {name: s}\nspec:\n  selector: {app: s}\n"
                       "  ports: [{name: tls, port: 443, protocol: tls}, "
                       "{name: web, port: 8443, protocol: https}]\n")
    for port in svc.spec.ports:
        assert port.protocol.is_tls and not port.protocol.is_http
    assert not Protocol.TCP.is_tls and Protocol.GRPC.is_http


def test_service_entry_tls_ports_map_to_tls() -> None:
    from shoal.registry.snapshot import MeshSnapshot

    mesh = MeshSnapshot.build(parse_yaml(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e}\n"
        "spec:\n  hosts: [api.example.com]\n  resolution: DNS\n"
        "  ports: [{number: 443, name: https, protocol: HTTPS}, "
        "{number: 8443, name: tls, protocol: TLS}]\n"), revision=1)
    [svc] = mesh.services
    assert [p.protocol for p in svc.spec.ports] == [Protocol.HTTPS, Protocol.TLS]


def test_credential_flag() -> None:
    c = parse_credential("edge=/a.crt,/a.key,/ca.pem")
    assert c == Credential("edge", Path("/a.crt"), Path("/a.key"), Path("/ca.pem"))
    assert c.secret_names() == ["edge", "edge-cacert"]
    assert parse_credential("x=c,k").ca is None
    for bad in ("edge", "edge=a.crt", "=a,b", "e=a,,c", "e=a,b,c,d"):
        with pytest.raises(AgentError, match="NAME=CERT,KEY"):
            parse_credential(bad)
    secrets = static_secrets((c,))
    assert [s["name"] for s in secrets] == ["edge", "edge-cacert"]
    assert secrets[1]["validation_context"]["trusted_ca"]["filename"].endswith("ca.pem")
