"""A shared root for several clusters, offline: one root, one intermediate per cluster.

    shoal ca create-root --out ROOT_DIR
    shoal ca create-intermediate --root ROOT_DIR --cluster a --out A_DIR
    shoal control-plane --cluster a --ca-cert A_DIR/ca-cert.pem --ca-key A_DIR/ca-key.pem \\
        --ca-chain A_DIR/ca-chain.pem ...

Each control plane signs with its own intermediate (its key never leaves its cluster's
directory); workload certificates carry leaf + intermediate; every trust bundle is the
one root, so a sidecar in one cluster verifies identities issued in another, and a
certificate from any other root is refused. The root key is needed only to make
intermediates: keep ROOT_DIR offline.
"""

from __future__ import annotations

from pathlib import Path

from shoal.ca import pki
from shoal.ca.files import write_private, write_public
from shoal.errors import CaError

ROOT_CERT, ROOT_KEY = "root-cert.pem", "root-key.pem"
CA_CERT, CA_KEY, CA_CHAIN = "ca-cert.pem", "ca-key.pem", "ca-chain.pem"


def _fresh(paths: list[Path]) -> None:
    if existing := [str(p) for p in paths if p.exists()]:
        raise CaError(f"refusing to overwrite {', '.join(existing)}")


def create_root(out: Path, trust_domain: str) -> dict[str, Path]:
    paths = {"root_cert": out / ROOT_CERT, "root_key": out / ROOT_KEY}
    _fresh(list(paths.values()))
    out.mkdir(parents=True, exist_ok=True)
    key = pki.new_key()
    write_private(paths["root_key"], pki.key_pem(key))
    write_public(paths["root_cert"], pki.cert_pem(pki.make_root(key, trust_domain)).encode())
    return paths


def create_intermediate(root: Path, cluster: str, out: Path) -> dict[str, Path]:
    """An intermediate for ``cluster`` signed by the root in directory ``root``; writes
    the control plane's --ca-cert, --ca-key and --ca-chain (the root) into ``out``."""
    try:
        root_cert = pki.load_certs((root / ROOT_CERT).read_bytes())[0]
        root_key = pki.load_key((root / ROOT_KEY).read_bytes())
    except OSError as e:
        raise CaError(f"cannot read the root in {root}: {e.strerror or e} (make one with "
                      "`shoal ca create-root`)") from None
    if root_cert.public_key() != root_key.public_key():
        raise CaError(f"{root / ROOT_KEY} is not the key of {root / ROOT_CERT}")
    trust_domain = next((a.value for a in root_cert.subject
                         if a.oid == pki.NameOID.ORGANIZATION_NAME), "cluster.local")
    paths = {"ca_cert": out / CA_CERT, "ca_key": out / CA_KEY, "ca_chain": out / CA_CHAIN}
    _fresh(list(paths.values()))
    out.mkdir(parents=True, exist_ok=True)
    key = pki.new_key()
    cert = pki.make_intermediate(key, root_cert, root_key, name=cluster,
                                 trust_domain=str(trust_domain))
    write_private(paths["ca_key"], pki.key_pem(key))
    write_public(paths["ca_cert"], pki.cert_pem(cert).encode())
    write_public(paths["ca_chain"], pki.cert_pem(root_cert).encode())
    return paths
