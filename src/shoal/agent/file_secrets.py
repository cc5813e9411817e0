"""Secrets read from files on this host: the certificates of TLS origination.

A DestinationRule with ``tls.mode`` SIMPLE / MUTUAL names certificate files on the
proxy's host; the generated cluster references them by SDS name (``file-cert:...``,
``file-root:...``, see :mod:`shoal.xds.secret_names`) and the agent's SDS server asks this
class for them. The files are read here, not by Envoy, so that:

* a missing or unreadable file, or one that is not PEM of the right kind (a key that does
  not belong to its certificate...), is logged once with its path and the secret is simply
  not answered: the cluster stays warming instead of Envoy NACKing anything;
* a change is noticed by polling each file's (mtime, size, inode) (:meth:`refresh`) and
  the new content served; a file that breaks later keeps its last good content served.

Only PEM certificates, keys and CRLs are ever served (anything else is refused), so a
secret name cannot be used to hand an arbitrary file to Envoy. A client certificate and
its private key are read only from the agent's key directories (``--tls-key-dir``,
default ``/etc/shoal/certs``; symlinks resolved): whoever may apply a
DestinationRule must not be able to make a sidecar present some other key it can read on
its host. Roots and CRLs are public and may be anywhere.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from shoal.agent.config import DEFAULT_TLS_KEY_DIRS
from shoal.xds import secret_names
from shoal.xds.secret_names import FileSecret

log = logging.getLogger("shoal.agent.sds")

# Where Linux distributions keep the system trust bundle (first existing wins);
# $SSL_CERT_FILE, when set, comes first.
SYSTEM_TRUST_STORES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine (LibreSSL), macOS
)

Stamp = tuple[tuple[str, int, int, int] | tuple[str], ...]


class FileSecretError(Exception):
    """A file secret cannot be served (the message names the file and the reason)."""


@dataclass
class _Entry:
    stamp: Stamp
    secret: secret_pb2.Secret | None  # the last good content (None: never loaded)
    error: str = ""  # the current problem, logged once


def system_trust_store(candidates: Sequence[str] | None = None) -> str:
    env = os.environ.get("SSL_CERT_FILE")
    for path in ([env] if env else []) + list(candidates or SYSTEM_TRUST_STORES):
        if os.path.isfile(path):
            return path
    raise FileSecretError("no system trust store found (looked at "
                          f"{', '.join(candidates or SYSTEM_TRUST_STORES)}); set "
                          "caCertificates in the DestinationRule")


class FileSecrets:
    """File secrets by SDS name, loaded on first use and reloaded when a file changes."""

    def __init__(self, system_stores: Sequence[str] | None = None,
                 key_dirs: Sequence[str | os.PathLike[str]] = DEFAULT_TLS_KEY_DIRS):
        self._system_stores = system_stores
        self.key_dirs = tuple(os.path.realpath(d) for d in key_dirs)
        self._entries: dict[str, _Entry] = {}

    def get(self, name: str) -> secret_pb2.Secret | None:
        """The secret ``name`` stands for, or None (not a file secret, or not loadable)."""
        if name not in self._entries:
            spec = secret_names.parse(name)
            if spec is None:
                return None
            entry = self._entries[name] = _Entry(stamp=(), secret=None)
            self._load(spec, entry)
        return self._entries[name].secret

    def refresh(self, names: Iterable[str] | None = None) -> set[str]:
        """Re-check the files of the secrets loaded so far (or of ``names``); returns
        the names whose served content changed."""
        changed = set()
        for name in list(names if names is not None else self._entries):
            entry = self._entries.get(name)
            spec = secret_names.parse(name)
            if entry is None or spec is None:
                continue
            if self._stamp(spec) != entry.stamp and self._load(spec, entry):
                changed.add(name)
        return changed

    def forget(self, keep: Iterable[str]) -> None:
        """Drop cached secrets nobody asks for any more."""
        wanted = set(keep)
        for name in [n for n in self._entries if n not in wanted]:
            del self._entries[name]

    # -- loading ------------------------------------------------------------------------

    def _paths(self, spec: FileSecret) -> tuple[str, ...]:
        if spec.is_certificate or spec.ca:
            return spec.paths
        try:
            return (system_trust_store(self._system_stores), *spec.paths)
        except FileSecretError:
            return spec.paths

    def _stamp(self, spec: FileSecret) -> Stamp:
        out: list[tuple[str, int, int, int] | tuple[str]] = []
        for path in self._paths(spec):
            try:
                st = os.stat(path)
                out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((path,))
        return tuple(out)

    def _load(self, spec: FileSecret, entry: _Entry) -> bool:
        """(Re)load ``spec`` into ``entry``; True if the served secret changed."""
        entry.stamp = self._stamp(spec)
        try:
            secret = build(spec, self._system_stores, self.key_dirs)
        except FileSecretError as e:
            if str(e) != entry.error:
                entry.error = str(e)
                keep = " (still serving its previous content)" if entry.secret else \
                    " (not served: the cluster using it stays warming)"
                log.error(f"cannot serve file secret: {e}{keep}", extra={
                    "secret": spec.name, "error": str(e)})
            return False
        if entry.error:
            log.info("file secret readable again", extra={"secret": spec.name})
        entry.error = ""
        if entry.secret is not None and entry.secret == secret:
            return False
        entry.secret = secret
        log.info("loaded file secret", extra={"secret": spec.name})
        return True


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise FileSecretError(f"{what} {path}: {e.strerror or e}") from None


def _certificates(path: str, what: str) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(path, what)
    try:
        with warnings.catch_warnings():  # e.g. a non-positive serial in an old root
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise FileSecretError(f"{what} {path}: not PEM certificates") from None
    return data, certs


def check_key_dirs(spec: FileSecret, key_dirs: Sequence[str]) -> None:
    """Refuse a client certificate or key outside ``key_dirs`` (real paths)."""
    for what, path in (("clientCertificate", spec.cert), ("privateKey", spec.key)):
        real = os.path.realpath(path)
        if not any(real.startswith(d.rstrip(os.sep) + os.sep) for d in key_dirs):
            allowed = ", ".join(key_dirs) or "none"
            raise FileSecretError(
                f"{what} {path}: outside the directories this agent reads TLS keys from "
                f"({allowed}); put it there or start the agent with --tls-key-dir DIR")


def build(spec: FileSecret, system_stores: Sequence[str] | None = None,
          key_dirs: Sequence[str] | None = None) -> secret_pb2.Secret:
    """The Envoy secret for ``spec``, from the files as they are now; a certificate and
    key only from ``key_dirs`` (real paths; None: anywhere)."""
    if spec.is_certificate:
        if key_dirs is not None:
            check_key_dirs(spec, key_dirs)
        chain, certs = _certificates(spec.cert, "clientCertificate")
        key_pem = _read(spec.key, "privateKey")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise FileSecretError(f"privateKey {spec.key}: not an unencrypted PEM private "
                                  "key") from None
        der = serialization.Encoding.DER
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(der, spki) != certs[0].public_key().public_bytes(
                der, spki):
            raise FileSecretError(f"privateKey {spec.key} does not belong to the "
                                  f"certificate in {spec.cert}")
        return secret_pb2.Secret(name=spec.name, tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=chain),
            private_key=base_pb2.DataSource(inline_bytes=key_pem)))
    if spec.ca:
        roots, _ = _certificates(spec.ca, "caCertificates")
    else:  # the OS's bundle: trusted as it is, only checked to be PEM
        path = system_trust_store(system_stores)
        roots = _read(path, "system trust store")
        if b"-----BEGIN CERTIFICATE-----" not in roots:
            raise FileSecretError(f"system trust store {path}: no PEM certificates")
    ctx = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=roots))
    if spec.crl:
        crl = _read(spec.crl, "caCrl")
        try:
            x509.load_pem_x509_crl(crl)
        except ValueError:
            raise FileSecretError(f"caCrl {spec.crl}: not a PEM CRL") from None
        ctx.crl.inline_bytes = crl
    return secret_pb2.Secret(name=spec.name, validation_context=ctx)
