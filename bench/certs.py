"""Static mesh certificates for the hand-written mTLS pair, made like shoal's SVIDs.

A throwaway EC P-256 root (:class:`shoal.testing.pki.TestCA`) and, per identity, an EC
P-256 leaf whose only SAN is the URI ``spiffe://cluster.local/ns/default/sa/<name>``,
EKU serverAuth+clientAuth (docs/adr/0007-workload-identity.md). Written as PEM files the
Envoy bootstraps reference by file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoal.testing.pki import TestCA

TRUST_DOMAIN = "cluster.local"


def spiffe(name: str, namespace: str = "default") -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{name}"


@dataclass(frozen=True)
class Identity:
    spiffe_id: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class MeshCerts:
    root: Path
    client: Identity
    server: Identity


def make(directory: Path, client: str = "bench-client", server: str = "bench-server"
         ) -> MeshCerts:
    ca = TestCA("bench root CA")
    root = ca.write(directory / "root-cert.pem")

    def leaf(name: str) -> Identity:
        uri = spiffe(name)
        files = ca.leaf(uris=[uri]).write(directory, name)
        return Identity(uri, files.cert, files.key)

    return MeshCerts(root, leaf(client), leaf(server))
