"""Building the CA of a control plane from its settings (files, flags)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from shoal.ca import pki
from shoal.ca.authority import CertificateAuthority
from shoal.ca.files import CaFiles, write_private, write_public
from shoal.ca.tokens import TokenAuthority
from shoal.errors import CaError, ValidationError


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CaError(f"{flag} {path}: {e.strerror or e}") from None


def open_ca(ca_dir: Path, trust_domain: str, cert_ttl_seconds: float, *,
            ca_cert: Path | None = None, ca_key: Path | None = None,
            ca_chain: Path | None = None, token_key: Path | None = None
            ) -> tuple[CertificateAuthority, TokenAuthority]:
    """The CA and the token authority. ``token_key``: a token-signing key file shared by
    several control-plane instances (HA), instead of ``<ca_dir>/token-key.pem``."""
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
    if token_key is not None:
        try:
            key = pki.load_key(_read(token_key, "--token-key"))
        except (ValueError, TypeError, ValidationError) as e:
            raise CaError(f"--token-key {token_key}: not an unencrypted PEM EC key ({e})"
                          ) from None
        if key.curve.name != "secp256r1":
            raise CaError(f"--token-key {token_key}: must be a P-256 key (tokens are ES256)")
    else:
        key = files.token_key()
    return ca, TokenAuthority(key, trust_domain)


def export_ca(ca_dir: Path, out: Path) -> dict[str, Path]:
    """Copy this control plane's active root (cert + key) and token-signing key to ``out``
    (keys 0600), to be given to every instance of an HA control plane as
    ``--ca-cert/--ca-key/--token-key``. Refuses to overwrite existing files."""
    files = CaFiles(ca_dir)
    loaded = files.load_roots()
    if loaded is None:
        raise CaError(f"no CA in {ca_dir} (start the control plane once to create it)")
    roots, active = loaded
    root = next(r for r in roots if r.name == active)
    key_file = ca_dir / "token-key.pem"
    if not key_file.exists():
        raise CaError(f"no token key in {ca_dir} (start the control plane once to create it)")
    targets = {"ca_cert": out / "ca-cert.pem", "ca_key": out / "ca-key.pem",
               "token_key": out / "token-key.pem"}
    if existing := [str(p) for p in targets.values() if p.exists()]:
        raise CaError(f"refusing to overwrite {', '.join(existing)}")
    out.mkdir(parents=True, exist_ok=True)
    write_public(targets["ca_cert"], pki.cert_pem(root.cert).encode())
    write_private(targets["ca_key"], pki.key_pem(root.key))
    write_private(targets["token_key"], key_file.read_bytes())
    return targets


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str, flag: str) -> float:
    """A command-line TTL (``--ttl``, ``--cert-ttl``): ``90s``, ``1m``, ``24h``, ``7d``,
    ``1h30m`` or plain seconds -> seconds. (Durations in config are ``api.types.Duration``.)"""
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
