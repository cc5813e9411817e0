"""A throwaway CA for TLS tests: server and client certificates with DNS names (EC P-256)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, name: str = "shoal tls test CA"):
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256()))

    def leaf(self, common_name: str, dns_names: Sequence[str]) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for ``dns_names``, usable by servers and clients."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(hours=12))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        key_pem = key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(_PEM), key_pem

    def write(self, directory: Path, name: str, dns_names: Sequence[str]) -> tuple[Path, Path]:
        """Write a leaf for ``dns_names`` as ``<name>.crt`` / ``<name>.key``."""
        cert, key = self.leaf(name, dns_names)
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        return cert_path, key_path

    def write_ca(self, directory: Path) -> Path:
        path = directory / f"{self.name.replace(' ', '-')}.pem"
        path.write_bytes(self.cert.public_bytes(_PEM))
        return path
