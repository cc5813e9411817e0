"""ADS server: state-of-the-world and delta streams over one stream core, with status."""

from shoal.xds.server.hooks import ConnectionHooks, NoHooks
from shoal.xds.server.peer import NodeClaims, NodeGuard, Peer, peer_of
from shoal.xds.server.server import XdsServer, grpc_code
from shoal.xds.server.status import Nack, ProxyStatus, StatusTracker, Sync, TypeStatus
from shoal.xds.server.stream import SlowClient

__all__ = [
    "ConnectionHooks",
    "Nack",
    "NoHooks",
    "NodeClaims",
    "NodeGuard",
    "Peer",
    "ProxyStatus",
    "SlowClient",
    "StatusTracker",
    "Sync",
    "TypeStatus",
    "XdsServer",
    "grpc_code",
    "peer_of",
]
