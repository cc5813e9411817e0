"""Who reported telemetry, and which service a cluster name points at."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """A sidecar: node id ``<workload>.<namespace>`` and its workload's service."""

    node_id: str
    workload: str
    namespace: str
    service: str

    @staticmethod
    def from_node(node_id: str, service: str = "") -> Identity:
        workload, _, namespace = node_id.rpartition(".")
        if not workload:
            workload, namespace = node_id, ""
        return Identity(node_id, workload, namespace, service)


@dataclass(frozen=True)
class ClusterTarget:
    port: int
    subset: str
    fqdn: str

    @property
    def name(self) -> str:
        return self.fqdn.split(".")[0]

    @property
    def namespace(self) -> str:
        parts = self.fqdn.split(".")
        return parts[1] if len(parts) > 2 and parts[2] == "svc" else ""


def parse_outbound_cluster(name: str) -> ClusterTarget | None:
    """``outbound|<port>|<subset>|<fqdn>`` (shoal.xds.generate.names) or None."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "outbound" or not parts[1].isdigit():
        return None
    return ClusterTarget(int(parts[1]), parts[2], parts[3])
