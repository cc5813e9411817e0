"""Building the CA of a control plane from its settings (files, flags)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from shoal.ca.authority import CertificateAuthority
from shoal.ca.files import CaFiles
from shoal.ca.tokens import TokenAuthority
from shoal.errors import CaError


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CaError(f"{flag} {path}: {e.strerror or e}") from None


def open_ca(ca_dir: Path, trust_domain: str, cert_ttl_seconds: float, *,
            ca_cert: Path | None = None, ca_key: Path | None = None,
            ca_chain: Path | None = None) -> tuple[CertificateAuthority, TokenAuthority]:
    files = CaFiles(ca_dir)
    files.ensure()
    ttl = dt.timedelta(seconds=cert_ttl_seconds)
    if (ca_cert is None) != (ca_key is None):
        raise CaError("--ca-cert and --ca-key go together")
    if ca_cert is not None and ca_key is not None:
        ca = CertificateAuthority.from_operator(
            files, trust_domain, ttl, cert_pem=_read(ca_cert, "--ca-cert"),
            key_pem=_read(ca_key, "--ca-key"),
            chain_pem=_read(ca_chain, "--ca-chain") if ca_chain else b"")
    else:
        ca = CertificateAuthority.open(files, trust_domain, ttl)
    return ca, TokenAuthority(files.token_key(), trust_domain)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str) -> float:
    """``90s``, ``1m``, ``24h``, ``7d``, ``1h30m`` or plain seconds -> seconds."""
    t = text.strip().lower()
    if t.replace(".", "", 1).isdigit():
        return float(t)
    total, num = 0.0, ""
    for ch in t:
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in _UNITS and num:
            total += float(num) * _UNITS[ch]
            num = ""
        else:
            num = "x"
            break
    if num or total <= 0:
        raise CaError(f"{flag} {text!r}: expected a duration like 90s, 1m, 24h or 7d")
    return total
