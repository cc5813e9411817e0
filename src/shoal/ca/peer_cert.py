"""Whom a client certificate speaks for: its one SPIFFE URI SAN (a workload), or its DNS
SANs (the control plane's serving certificate, shoal.ca.serving). One reading for every
surface that takes client certificates (secure xDS and telemetry over gRPC, the agent
listener's REST routes, the agents' own endpoint); the TLS layer has already verified
the chain."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from shoal.ca import pki
from shoal.ca.spiffe import SpiffeId
from shoal.errors import PermissionDenied, ValidationError


def workload_identity(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of a workload certificate; PermissionDenied for any other."""
    uris = pki.uri_sans(cert)
    if len(uris) != 1:
        raise PermissionDenied(f"the client certificate must carry exactly one URI SAN (a "
                               f"SPIFFE ID); it has {len(uris)}")
    try:
        return SpiffeId.parse(uris[0])
    except ValidationError:
        raise PermissionDenied(f"the client certificate's identity {uris[0]!r} is not a "
                               "workload SPIFFE ID") from None


@dataclass(frozen=True)
class PeerCertificate:
    """What the surfaces read from a client certificate, read once per certificate."""

    identity: SpiffeId | None  # None: not a workload certificate (``problem`` says why)
    problem: str
    not_before: int
    not_after: int
    attestation: str  # the token id it was first attested with (pki.attestation_of)
    uris: tuple[str, ...] = ()  # every URI SAN
    dns: tuple[str, ...] = ()  # every DNS SAN


@functools.lru_cache(maxsize=4096)
def read_certificate(der: bytes) -> PeerCertificate:
    """Parse a DER client certificate once: agents present the same certificate with
    every call (a stats report a second), and parsing it was most of a call's cost."""
    cert = x509.load_der_x509_certificate(der)
    try:
        sid: SpiffeId | None = workload_identity(cert)
        problem = ""
    except PermissionDenied as e:
        sid, problem = None, str(e)
    return PeerCertificate(sid, problem, int(cert.not_valid_before_utc.timestamp()),
                           int(cert.not_valid_after_utc.timestamp()),
                           pki.attestation_of(cert) or "", tuple(pki.uri_sans(cert)),
                           tuple(pki.dns_sans(cert)))


def request_certificate_der(request: Any) -> bytes | None:
    """The DER client certificate of an aiohttp request over TLS (None without one)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return der or None


def request_peer(request: Any) -> PeerCertificate | None:
    """The client certificate of an aiohttp request over TLS, read once per certificate
    (:func:`read_certificate`); None without one."""
    der = request_certificate_der(request)
    return read_certificate(der) if der else None
