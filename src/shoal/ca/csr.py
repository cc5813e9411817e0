"""Certificate signing requests from agents: parse, check the signature and the key."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shoal.ca.pki import uri_sans
from shoal.errors import ValidationError, Violation


def parse_csr(pem: str) -> tuple[x509.CertificateSigningRequest, str]:
    """The CSR and its one URI SAN; ValidationError naming the problem otherwise."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as e:
        raise ValidationError([Violation("csr", f"not a PEM certificate request: {e}")]) from None
    if not csr.is_signature_valid:
        raise ValidationError([Violation("csr", "signature does not verify")])
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValidationError([Violation("csr", "key must be EC P-256")])
    uris = uri_sans(csr)
    if len(uris) != 1:
        raise ValidationError([Violation(
            "csr", f"must carry exactly one URI SAN (the SPIFFE ID), found {len(uris)}")])
    return csr, uris[0]


def make_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: str) -> str:
    """What the agent sends: a CSR with the SPIFFE ID as its only SAN."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()
