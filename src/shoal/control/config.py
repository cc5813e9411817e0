"""Settings of one control-plane process (embedded defaults; flags override)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shoal.control.ports import (
    DEFAULT_AGENT_API_PORT,
    DEFAULT_API_PORT,
    DEFAULT_SECURE_XDS_PORT,
    DEFAULT_XDS_PORT,
)
from shoal.registry.snapshot import MeshConfig
from shoal.store.etcd_security import EtcdSecurity


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @staticmethod
    def parse(text: str, default_host: str = "127.0.0.1") -> Address:
        host, _, port = text.rpartition(":")
        return Address(host.strip("[]") or default_host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ControlPlaneConfig:
    data_dir: Path
    api: Address = field(default_factory=lambda: Address("127.0.0.1", DEFAULT_API_PORT))
    xds: Address = field(default_factory=lambda: Address("127.0.0.1", DEFAULT_XDS_PORT))
    mesh: MeshConfig = field(default_factory=MeshConfig)
    lease_ttl: float = 15.0  # seconds an agent may stay silent before its workload expires
    debounce: float = 0.05  # quiet period before a push
    max_delay: float = 0.5  # longest a change waits under a stream of further changes
    store: str = "sqlite"  # sqlite | memory | etcd
    etcd_endpoints: tuple[str, ...] = ()  # client URLs when store == "etcd"
    # TLS files and etcd credentials for those endpoints (docs/adr/0023-etcd-tls-and-auth.md)
    etcd_security: EtcdSecurity = field(default_factory=EtcdSecurity)
    otlp_export: str | None = None  # forward sidecar spans to this OTLP/gRPC HOST:PORT
    # identity (see docs/adr/0007-workload-identity.md); None disables a TLS listener
    agent_api: Address | None = field(
        default_factory=lambda: Address("127.0.0.1", DEFAULT_AGENT_API_PORT))
    secure_xds: Address | None = field(
        default_factory=lambda: Address("127.0.0.1", DEFAULT_SECURE_XDS_PORT))
    cert_ttl: float = 24 * 3600.0  # seconds a workload certificate is valid
    require_tokens: bool = True  # registration needs a token matching the workload
    ca_cert: Path | None = None  # operator-provided CA (root or intermediate [+ chain])
    ca_key: Path | None = None
    ca_chain: Path | None = None
    token_key: Path | None = None  # shared token-signing key (HA); default <ca_dir>/token-key.pem
    ratelimit_redis: str | None = None  # Redis URL for the embedded rate-limit service
    # seconds a starting control plane waits for remote clusters' first sync (ADR 0016)
    remote_sync_timeout: float = 5.0
    # operator access (ADR 0022): the bootstrap admin token's lifetime (renewed at half),
    # further Host names the operator API answers to, and the audit log
    admin_token_ttl: float = 24 * 3600.0
    api_hosts: tuple[str, ...] = ()

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.log"

    @property
    def ca_dir(self) -> Path:
        return self.data_dir / "ca"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "shoal.db"
