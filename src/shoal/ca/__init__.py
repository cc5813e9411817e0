"""The mesh certificate authority: SPIFFE identities, roots, leaves, tokens, trust bundles.

    CertificateAuthority   issues workload SVIDs (authority.py) from CSRs (csr.py)
    CaFiles                persists self-made roots and the token key (files.py)
    TokenAuthority         mints and verifies attestation tokens (tokens.py)
    SpiffeId               spiffe://<trust-domain>/ns/<ns>/sa/<sa> (spiffe.py)
"""

from shoal.ca.authority import CertificateAuthority, Issued
from shoal.ca.spiffe import SpiffeId
from shoal.ca.tokens import TokenAuthority, TokenClaims

__all__ = ["CertificateAuthority", "Issued", "SpiffeId", "TokenAuthority", "TokenClaims"]
