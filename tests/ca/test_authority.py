"""The CA as a library: persistence, leaf contents, tokens, CSR checks, root rotation."""

from __future__ import annotations

import datetime as dt
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from shoal.ca import pki
from shoal.ca.authority import WORKLOAD_DNS_NAME, CertificateAuthority
from shoal.ca.csr import make_csr
from shoal.ca.files import CaFiles
from shoal.ca.serving import SERVER_NAME
from shoal.ca.setup import open_ca, parse_ttl
from shoal.ca.tokens import TokenAuthority
from shoal.errors import CaError, PermissionDenied, Unauthenticated, ValidationError

TD = "cluster.local"
HOUR = dt.timedelta(hours=1)


def _ca(tmp_path: Path, ttl: dt.timedelta = HOUR) -> tuple[CertificateAuthority, TokenAuthority]:
    return open_ca(tmp_path / "ca", TD, ttl.total_seconds())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_root_persists_across_restarts_with_private_files(tmp_path: Path) -> None:
    ca1, tokens1 = _ca(tmp_path)
    ca2, tokens2 = _ca(tmp_path)
    assert ca1.signer.cert == ca2.signer.cert
    assert tokens1.key_id == tokens2.key_id
    d = tmp_path / "ca"
    assert _mode(d) == 0o700
    assert _mode(d / "root-1-key.pem") == 0o600
    assert _mode(d / "token-key.pem") == 0o600
    assert pki.load_certs((d / "root-cert.pem").read_bytes()) == [ca1.signer.cert]


def test_a_leaf_has_the_spiffe_san_the_ekus_and_the_ttl(tmp_path: Path) -> None:
    ca, tokens = _ca(tmp_path)
    _, claims = tokens.create("default", "reviews", 60)
    key = pki.new_key()
    issued = ca.issue_workload(make_csr(key, claims.spiffe_id.uri), claims, workload="r-1")
    leaf = issued.cert
    assert pki.uri_sans(leaf) == ["spiffe://cluster.local/ns/default/sa/reviews"]
    # and the one DNS name every workload certificate carries (ADR 0028), never the
    # control plane's
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [WORKLOAD_DNS_NAME] != [SERVER_NAME]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.public_key() == key.public_key()
    ttl = leaf.not_valid_after_utc - pki.now()
    assert HOUR - dt.timedelta(minutes=1) < ttl <= HOUR
    assert leaf.not_valid_before_utc < pki.now() - dt.timedelta(minutes=4)  # backdated
    leaf.verify_directly_issued_by(ca.signer.cert)
    assert issued.chain == [pki.cert_pem(leaf)]  # signed by the root: leaf only


def test_a_token_only_obtains_its_own_identity(tmp_path: Path) -> None:
    ca, tokens = _ca(tmp_path)
    _, claims_a = tokens.create("default", "sa-a", 60)
    csr_b = make_csr(pki.new_key(), "spiffe://cluster.local/ns/default/sa/sa-b")
    with pytest.raises(PermissionDenied, match=r"sa-b.*token is for.*sa-a"):
        ca.issue_workload(csr_b, claims_a)


def test_garbage_forged_and_expired_tokens_are_refused(tmp_path: Path) -> None:
    _, tokens = _ca(tmp_path)
    with pytest.raises(Unauthenticated, match="not a JWT"):
        tokens.verify("garbage")
    _, other = open_ca(tmp_path / "other", TD, 3600)
    forged, _ = other.create("default", "a", 60)
    with pytest.raises(Unauthenticated, match="signature"):
        tokens.verify(forged)
    past = TokenAuthority(tokens._key, TD, clock=lambda: time.time() - 120)
    expired, _ = past.create("default", "a", 60)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(expired)
    good, claims = tokens.create("ns1", "a", 60)
    assert tokens.verify(good) == claims


def test_bad_csrs_are_refused(tmp_path: Path) -> None:
    ca, tokens = _ca(tmp_path)
    _, claims = tokens.create("default", "a", 60)
    with pytest.raises(ValidationError, match="PEM"):
        ca.issue_workload("not a csr", claims)
    two = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([
               x509.UniformResourceIdentifier(claims.spiffe_id.uri),
               x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/b")]),
               critical=False).sign(pki.new_key(), pki.hashes.SHA256()))
    with pytest.raises(ValidationError, match="exactly one URI SAN"):
        ca.issue_workload(two.public_bytes(Encoding.PEM).decode(), claims)


def test_root_rotation_publishes_old_and_new_then_prunes(tmp_path: Path) -> None:
    ca, tokens = _ca(tmp_path)
    old = ca.signer.cert
    v1 = ca.bundle_version
    ca.rotate_root()
    new = ca.signer.cert
    assert new != old and ca.trust_bundle() == [old, new] and ca.bundle_version != v1
    _, claims = tokens.create("default", "a", 60)
    leaf = ca.issue_workload(make_csr(pki.new_key(), claims.spiffe_id.uri), claims).cert
    leaf.verify_directly_issued_by(new)
    again, _ = _ca(tmp_path)  # a restart keeps both and the active one
    assert again.trust_bundle() == [old, new] and again.signer.cert == new
    assert pki.load_certs((tmp_path / "ca" / "root-cert.pem").read_bytes()) == [old, new]
    result = again.prune_roots()
    assert result["pruned"] == ["root-1"] and again.trust_bundle() == [new]
    assert not (tmp_path / "ca" / "root-1-key.pem").exists()


def test_an_operator_intermediate_signs_with_its_chain(tmp_path: Path) -> None:
    root_key, int_key = pki.new_key(), pki.new_key()
    root = pki.make_root(root_key, TD)
    inter = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(
        x509.oid.NameOID.COMMON_NAME, "intermediate")])).issuer_name(root.subject)
        .public_key(int_key.public_key()).serial_number(pki.serial())
        .not_valid_before(pki.now() - HOUR).not_valid_after(pki.now() + 100 * HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, pki.hashes.SHA256()))
    (tmp_path / "int.pem").write_text(pki.cert_pem(inter) + pki.cert_pem(root))
    (tmp_path / "int.key").write_bytes(pki.key_pem(int_key))
    ca, tokens = open_ca(tmp_path / "ca", TD, 3600, ca_cert=tmp_path / "int.pem",
                         ca_key=tmp_path / "int.key")
    assert ca.trust_bundle() == [root]
    _, claims = tokens.create("default", "a", 60)
    issued = ca.issue_workload(make_csr(pki.new_key(), claims.spiffe_id.uri), claims)
    assert issued.chain[1] == pki.cert_pem(inter) and len(issued.chain) == 2
    issued.cert.verify_directly_issued_by(inter)
    with pytest.raises(CaError, match="does not match"):
        open_ca(tmp_path / "ca2", TD, 3600, ca_cert=tmp_path / "int.pem",
                ca_key=tmp_path / "ca" / "token-key.pem")


def test_ttl_and_durations() -> None:
    assert parse_ttl("1h30m", "--x") == 5400 and parse_ttl("90", "--x") == 90
    with pytest.raises(CaError):
        parse_ttl("soon", "--cert-ttl")
    with pytest.raises(CaError, match="at least"):
        CertificateAuthority.open(CaFiles(Path("/nonexistent")), TD, dt.timedelta(seconds=30))
