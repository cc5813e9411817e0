"""Service virtual IPs for transparent capture (docs/adr/0015-network-namespace-pods.md).

A pod's app resolves ``web`` to a VIP and connects to VIP:port; iptables sends the
connection to its sidecar, which reads the original destination and so knows the service.
VIPs are allocated like Istio's auto-allocation, from 240.240.0.0/16 (class E: never a real
host), but without state: each service's address is a hash of its host name, so every
control plane that sees the same services computes the same addresses, across restarts.

Two names hashing to the same address (rare: ~n²/130k for n services) are resolved by
linear probing in host-name order, so the first name keeps its hashed address.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping

VIP_RANGE = ipaddress.IPv4Network("240.240.0.0/16")


def _slot(host: str, size: int) -> int:
    digest = hashlib.sha256(host.encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


def allocate(hosts: Iterable[str], network: ipaddress.IPv4Network = VIP_RANGE
             ) -> Mapping[str, ipaddress.IPv4Address]:
    """host name -> VIP, for every distinct name (network and broadcast addresses unused)."""
    base = int(network.network_address) + 1
    size = network.num_addresses - 2
    names = sorted(set(hosts))
    if len(names) > size:
        raise ValueError(f"{len(names)} services do not fit in {network}")
    taken: set[int] = set()
    out: dict[str, ipaddress.IPv4Address] = {}
    for host in names:
        slot = _slot(host, size)
        while slot in taken:
            slot = (slot + 1) % size
        taken.add(slot)
        out[host] = ipaddress.IPv4Address(base + slot)
    return out
