"""The certificate authority: issues workload SVIDs and server certificates, keeps the
trust bundle, rotates and prunes roots.

Two modes:
* self-managed (default): roots made here and persisted by :class:`CaFiles`; a restart
  reuses them. ``rotate_root`` adds a new root (the bundle becomes old + new, new leaves
  are signed by the new one); ``prune_roots`` drops every root but the active one.
* operator-provided: ``--ca-cert/--ca-key`` (a root, or an intermediate with its chain).
  Leaf chains are leaf + intermediate(s); the bundle is the root(s) of that chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from shoal.ca import pki
from shoal.ca.csr import parse_csr
from shoal.ca.files import CaFiles, StoredRoot
from shoal.ca.tokens import TokenClaims
from shoal.errors import CaError, Conflict, PermissionDenied

log = logging.getLogger("shoal.ca")
MIN_TTL = dt.timedelta(minutes=1)
#: The DNS SAN of every workload certificate, beside its SPIFFE ID: the name a client that
#: can only check DNS names (Prometheus scraping a workload's metrics endpoint) verifies
#: -- "a workload of this mesh", never one workload (docs/adr/0028). Reserved: no
#: control plane or other server of the mesh may be reached under this name.
WORKLOAD_DNS_NAME = "shoal-workload"


@dataclass(frozen=True)
class Signer:
    cert: x509.Certificate
    key: pki.Key
    intermediates: tuple[x509.Certificate, ...] = ()  # above ``cert``, below the root


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    chain: list[str]  # PEM: leaf first, then intermediates
    trust_bundle: list[str]  # PEM: every trusted root
    bundle_version: str
    spiffe_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"certChain": self.chain, "trustBundle": self.trust_bundle,
                "bundleVersion": self.bundle_version,
                "expiresAt": self.cert.not_valid_after_utc.isoformat(),
                "serial": format(self.cert.serial_number, "x"), "spiffeId": self.spiffe_id}


@dataclass
class CertificateAuthority:
    trust_domain: str
    ttl: dt.timedelta
    files: CaFiles
    roots: list[StoredRoot] = field(default_factory=list)  # self-managed mode
    active: str = ""
    operator: Signer | None = None
    operator_bundle: tuple[x509.Certificate, ...] = ()
    issued: dict[str, dict[str, Any]] = field(default_factory=dict)  # "ns/workload" -> record
    listeners: list[Callable[[], None]] = field(default_factory=list)  # bundle changed

    # -- construction ---------------------------------------------------------------------
    @staticmethod
    def open(files: CaFiles, trust_domain: str, ttl: dt.timedelta) -> CertificateAuthority:
        """Load the persisted roots, or make (and persist) the first one."""
        _check_ttl(ttl)
        loaded = files.load_roots()
        if loaded is None:
            key = pki.new_key()
            root = StoredRoot("root-1", pki.make_root(key, trust_domain), key)
            files.save_roots([root], root.name)
            loaded = ([root], root.name)
            log.info("created a new root CA", extra={"dir": str(files.dir),
                                                      "serial": format(root.cert.serial_number,
                                                                       "x")})
        ca = CertificateAuthority(trust_domain, ttl, files, roots=loaded[0], active=loaded[1])
        files.write_bundle(ca.trust_bundle())
        return ca

    @staticmethod
    def from_operator(files: CaFiles, trust_domain: str, ttl: dt.timedelta, *, cert_pem: bytes,
                      key_pem: bytes, chain_pem: bytes = b"") -> CertificateAuthority:
        _check_ttl(ttl)
        certs = pki.load_certs(cert_pem) + (pki.load_certs(chain_pem) if chain_pem else [])
        key = pki.load_key(key_pem)
        signer_cert = certs[0]
        if signer_cert.public_key() != key.public_key():
            raise CaError("--ca-key does not match the first certificate of --ca-cert")
        bc = _basic_constraints(signer_cert)
        if bc is None or not bc.ca:
            raise CaError("--ca-cert is not a CA certificate (basicConstraints CA:TRUE)")
        rest = certs[1:]
        roots = [c for c in certs if pki.is_self_signed(c)] or [certs[-1]]
        intermediates = tuple(c for c in rest if c not in roots)
        ca = CertificateAuthority(trust_domain, ttl, files,
                                  operator=Signer(signer_cert, key, intermediates),
                                  operator_bundle=tuple(roots))
        files.write_bundle(ca.trust_bundle())
        return ca

    # -- trust ----------------------------------------------------------------------------
    @property
    def signer(self) -> Signer:
        if self.operator is not None:
            return self.operator
        root = next(r for r in self.roots if r.name == self.active)
        return Signer(root.cert, root.key)

    def trust_bundle(self) -> list[x509.Certificate]:
        if self.operator is not None:
            return list(self.operator_bundle)
        return [r.cert for r in self.roots]

    def bundle_pem(self) -> list[str]:
        return pki.bundle_pem(self.trust_bundle())

    @property
    def bundle_version(self) -> str:
        h = hashlib.sha256()
        for c in self.trust_bundle():
            h.update(c.fingerprint(pki.hashes.SHA256()))
        return h.hexdigest()[:12]

    # -- issuing --------------------------------------------------------------------------
    def _issue(self, public_key: Any, **names: Any) -> tuple[x509.Certificate, list[str]]:
        s = self.signer
        cert = pki.sign_leaf(public_key, s.cert, s.key, ttl=names.pop("ttl", self.ttl), **names)
        chain = [pki.cert_pem(cert)]
        if not pki.is_self_signed(s.cert):
            chain += [pki.cert_pem(s.cert), *pki.bundle_pem(s.intermediates)]
        return cert, chain

    def issue_workload(self, csr_pem: str, claims: TokenClaims, *, workload: str = ""
                       ) -> Issued:
        """Sign a CSR whose one URI SAN is exactly the token's SPIFFE ID."""
        csr, uri = parse_csr(csr_pem)
        if uri != claims.spiffe_id.uri:
            raise PermissionDenied(f"the CSR asks for {uri} but the token is for "
                                   f"{claims.spiffe_id.uri}; a token only obtains its own "
                                   "identity")
        cert, chain = self._issue(csr.public_key(), uris=[uri], dns=[WORKLOAD_DNS_NAME],
                                  attestation=claims.jti)
        issued = Issued(cert, chain, self.bundle_pem(), self.bundle_version, uri)
        record = {"spiffeId": uri, "workload": workload, "namespace": claims.namespace,
                  "tokenId": claims.jti, **pki.describe(cert)}
        self.issued[f"{claims.namespace}/{workload or '-'}"] = record
        self.issued[uri] = record
        log.info("issued workload certificate", extra={
            "spiffe_id": uri, "workload": workload, "serial": record["serial"],
            "not_after": record["notAfter"]})
        return issued

    def issue_server(self, public_key: Any, *, dns: Sequence[str], ips: Sequence[str],
                     ttl: dt.timedelta | None = None) -> Issued:
        cert, chain = self._issue(public_key, dns=list(dns), ips=list(ips), ttl=ttl or self.ttl,
                                  common_name=dns[0] if dns else "")
        return Issued(cert, chain, self.bundle_pem(), self.bundle_version)

    # -- rotation -------------------------------------------------------------------------
    def rotate_root(self) -> dict[str, Any]:
        if self.operator is not None:
            raise Conflict("the CA is operator-provided (--ca-cert); rotate it by restarting "
                           "with a new --ca-cert/--ca-key and a --ca-chain holding both roots")
        n = 1 + max(int(r.name.rsplit("-", 1)[1]) for r in self.roots)
        key = pki.new_key()
        root = StoredRoot(f"root-{n}", pki.make_root(key, self.trust_domain, generation=n), key)
        self.roots.append(root)
        self.active = root.name
        self._changed()
        log.warning("root rotated: trust bundle is now old + new; prune when every "
                    "workload has renewed", extra={"active": root.name})
        return self.status()

    def prune_roots(self) -> dict[str, Any]:
        if self.operator is not None:
            raise Conflict("the CA is operator-provided; nothing to prune")
        dropped = [r for r in self.roots if r.name != self.active]
        self.roots = [r for r in self.roots if r.name == self.active]
        self._changed()
        for r in dropped:
            self.files.remove_root(r.name)
        return {**self.status(), "pruned": [r.name for r in dropped]}

    def _changed(self) -> None:
        self.files.save_roots(self.roots, self.active)
        self.files.write_bundle(self.trust_bundle())
        for listener in list(self.listeners):
            listener()

    def status(self) -> dict[str, Any]:
        signer = self.signer
        return {
            "trustDomain": self.trust_domain, "mode": "operator" if self.operator else "self",
            "certTtlSeconds": int(self.ttl.total_seconds()),
            "active": {"name": self.active or "operator", **pki.describe(signer.cert)},
            "roots": [{"name": r.name, "active": r.name == self.active,
                       **pki.describe(r.cert)} for r in self.roots]
            or [{"name": "operator", "active": True, **pki.describe(c)}
                for c in self.operator_bundle],
            "bundleVersion": self.bundle_version, "trustBundle": self.bundle_pem(),
            "bundleFile": str(self.files.bundle_path),
        }


def _check_ttl(ttl: dt.timedelta) -> None:
    if ttl < MIN_TTL:
        raise CaError(f"--cert-ttl {ttl}: must be at least {MIN_TTL}")


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
