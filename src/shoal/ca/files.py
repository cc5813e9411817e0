"""The CA's files in ``<data_dir>/ca/`` (directory 0700, private keys 0600).

    roots.json              {"active": "root-2", "roots": ["root-1", "root-2"]}
    root-N-cert.pem         a root this control plane made
    root-N-key.pem          its key (0600)
    token-key.pem           the key signing attestation tokens (0600)
    root-cert.pem           the trust bundle (every trusted root), for agents' --ca-bundle
    serving/                the control plane's own TLS certificate and key (0600)

Writes are atomic (temp file + rename), so a crash never leaves half a key behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from shoal.ca import pki
from shoal.errors import CaError


@dataclass(frozen=True)
class StoredRoot:
    name: str
    cert: x509.Certificate
    key: pki.Key


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    tmp.replace(path)


class CaFiles:
    def __init__(self, directory: Path):
        self.dir = directory

    @property
    def bundle_path(self) -> Path:
        return self.dir / "root-cert.pem"

    @property
    def serving_dir(self) -> Path:
        return self.dir / "serving"

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.serving_dir.mkdir(exist_ok=True)
        os.chmod(self.serving_dir, 0o700)

    def load_roots(self) -> tuple[list[StoredRoot], str] | None:
        """The stored roots and the name of the active one; None when there are none."""
        state_file = self.dir / "roots.json"
        if not state_file.exists():
            return None
        try:
            state = json.loads(state_file.read_text())
            roots = [StoredRoot(n, pki.load_certs((self.dir / f"{n}-cert.pem").read_bytes())[0],
                                pki.load_key((self.dir / f"{n}-key.pem").read_bytes()))
                     for n in state["roots"]]
            active = str(state["active"])
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise CaError(f"cannot load the CA from {self.dir}: {e} "
                          "(restore it from backup; a new root would break every sidecar)"
                          ) from None
        if active not in {r.name for r in roots}:
            raise CaError(f"{state_file}: active root {active!r} is not among the roots")
        return roots, active

    def save_roots(self, roots: list[StoredRoot], active: str) -> None:
        self.ensure()
        for r in roots:
            key_file = self.dir / f"{r.name}-key.pem"
            if not key_file.exists():
                write_private(key_file, pki.key_pem(r.key))
                write_public(self.dir / f"{r.name}-cert.pem", pki.cert_pem(r.cert).encode())
        state = {"active": active, "roots": [r.name for r in roots]}
        write_public(self.dir / "roots.json", json.dumps(state, indent=2).encode())

    def remove_root(self, name: str) -> None:
        for suffix in ("cert", "key"):
            (self.dir / f"{name}-{suffix}.pem").unlink(missing_ok=True)

    def write_bundle(self, certs: list[x509.Certificate]) -> None:
        self.ensure()
        write_public(self.bundle_path, "".join(pki.bundle_pem(certs)).encode())

    def token_key(self) -> pki.Key:
        """The token-signing key, created on first use."""
        self.ensure()
        path = self.dir / "token-key.pem"
        if path.exists():
            try:
                return pki.load_key(path.read_bytes())
            except (OSError, ValueError) as e:
                raise CaError(f"cannot load the token key {path}: {e}") from None
        key = pki.new_key()
        write_private(path, pki.key_pem(key))
        return key
