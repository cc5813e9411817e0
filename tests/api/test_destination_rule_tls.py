"""DestinationRule ``trafficPolicy.tls``: what parses, and every rejection with its path."""

from __future__ import annotations

import pytest

from shoal.api import parse_yaml
from shoal.api.traffic_policy import TLSMode
from shoal.errors import ValidationError

PREFIX = "spec.trafficPolicy.tls"


def rule(tls: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\n"
            f"spec:\n  host: api.example.com\n  trafficPolicy: {{tls: {tls}}}\n")


def violations(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as e:
        parse_yaml(text)
    return [(v.path, v.message) for v in e.value.violations]


@pytest.mark.parametrize("tls", [
    "{mode: SIMPLE}",
    "{mode: SIMPLE, caCertificates: /etc/certs/ca.pem, sni: api.example.com, "
    "subjectAltNames: [api.example.com, 'spiffe://td/ns/a/sa/b', 10.0.0.1]}",
    "{mode: SIMPLE, insecureSkipVerify: true}",
    "{mode: SIMPLE, caCertificates: /etc/certs/ca.pem, caCrl: /etc/certs/ca.crl}",
    "{mode: MUTUAL, clientCertificate: /etc/certs/c.pem, privateKey: /etc/certs/k.pem}",
    "{mode: ISTIO_MUTUAL}",
    "{mode: DISABLE}",
])
def test_valid_tls_settings(tls: str) -> None:
    [dr] = parse_yaml(rule(tls))
    assert dr.spec.traffic_policy.tls.mode in TLSMode


def test_tls_per_port_and_subset_merge_like_istio() -> None:
    [dr] = parse_yaml("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}
  subsets:
  - name: plain
    labels: {v: plain}
    trafficPolicy: {tls: {mode: DISABLE}}
""")
    from shoal.api.traffic_policy import merge
    top = dr.spec.traffic_policy
    assert merge(top, None, 443).tls.mode is TLSMode.SIMPLE
    assert merge(top, None, 8443).tls.mode is TLSMode.MUTUAL
    assert merge(top, dr.spec.subset("plain").traffic_policy, 8443).tls.mode is TLSMode.DISABLE


@pytest.mark.parametrize("tls, path, message", [
    ("{mode: MUTUAL}", "", "mode MUTUAL needs clientCertificate and privateKey"),
    ("{mode: MUTUAL, clientCertificate: /c.pem}", "", "needs privateKey"),
    ("{mode: SIMPLE, clientCertificate: /c.pem, privateKey: /k.pem}", "",
     "only used with mode MUTUAL"),
    ("{mode: SIMPLE, caCertificates: certs/ca.pem}", ".caCertificates", "absolute file path"),
    ("{mode: MUTUAL, clientCertificate: /c.pem, privateKey: k.pem}", ".privateKey",
     "absolute file path"),
    ("{mode: SIMPLE, caCertificates: /a~b.pem}", ".caCertificates", "'~'"),
    ("{mode: SIMPLE, credentialName: my-secret}", ".credentialName", "not supported"),
    ("{mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}", "",
     "insecureSkipVerify"),
    ("{mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}", "",
     "insecureSkipVerify"),
    ("{mode: ISTIO_MUTUAL, sni: a.example}", "", "only used with mode SIMPLE or MUTUAL"),
    ("{mode: DISABLE, caCertificates: /ca.pem}", "", "not DISABLE"),
    ("{mode: SIMPLE, sni: ''}", ".sni", "not a server name"),
    ("{mode: SIMPLE, subjectAltNames: ['a b']}", ".subjectAltNames",
     "not a subject alternative name"),
    ("{mode: SIMPLE, bogus: 1}", ".bogus", "unknown field"),
])
def test_invalid_tls_names_the_field(tls: str, path: str, message: str) -> None:
    found = violations(rule(tls))
    assert any(p == PREFIX + path and message in m for p, m in found), found


def test_every_violation_is_reported() -> None:
    found = violations(rule("{mode: MUTUAL, clientCertificate: c.pem, privateKey: k.pem}"))
    assert {p for p, _ in found} == {PREFIX + ".clientCertificate", PREFIX + ".privateKey"}
