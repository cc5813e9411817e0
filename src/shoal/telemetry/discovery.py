"""``GET /api/v1/prometheus/targets``: every workload's metrics endpoint, for Prometheus'
``http_sd_configs`` (docs/adr/0028, :mod:`shoal.telemetry.scrape`).

One target group per local workload whose agent registered a metrics port
(:data:`~shoal.telemetry.scrape.METRICS_PORT_ANNOTATION`): ``<address>:<port>`` and the
labels ``namespace``, ``workload``, ``service`` (its ``app`` label, the canonical service),
``version`` and ``cluster`` (empty ones left out). The annotation sits on the workload's
own registration, which only its own identity may write (docs/adr/0021); a value that is
not a port leaves the workload out. Workloads seen from other clusters are left to their
own cluster's Prometheus (their addresses are often not reachable from here).

An operator route (``view:*``, like ``/metrics``): target lists name every workload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from shoal.api.meta import Resource
from shoal.multicluster.labels import REMOTE_ANNOTATION, cluster_of
from shoal.netaddr import host_port
from shoal.registry.snapshot import MeshSnapshot
from shoal.telemetry.scrape import METRICS_PORT_ANNOTATION, TARGETS_PATH


def metrics_port(workload: Resource) -> int | None:
    """The workload's registered metrics port; None without one (or not a port)."""
    text = workload.metadata.annotations.get(METRICS_PORT_ANNOTATION, "")
    if not text.isascii() or not text.isdigit():
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def target_group(workload: Resource, cluster: str = "") -> dict[str, Any] | None:
    """The ``http_sd`` target group of one workload; None when it serves no metrics."""
    port = metrics_port(workload)
    if port is None or REMOTE_ANNOTATION in workload.metadata.annotations:
        return None
    labels = workload.spec.labels
    values = {"namespace": workload.metadata.namespace, "workload": workload.metadata.name,
              "service": labels.get("app", ""), "version": labels.get("version", ""),
              "cluster": cluster_of(labels) or cluster}
    return {"targets": [host_port(workload.spec.address, port)],
            "labels": {k: v for k, v in values.items() if v}}


def target_groups(workloads: Iterable[Resource], cluster: str = "") -> list[dict[str, Any]]:
    groups = (target_group(w, cluster) for w in workloads if w.kind == "Workload")
    return [g for g in groups if g is not None]


class PrometheusTargets:
    """The route, reading the mesh as the sync loop last saw it."""

    def __init__(self, mesh: Callable[[], MeshSnapshot]) -> None:
        self._mesh = mesh

    def mount(self, app: web.Application) -> None:
        app.router.add_get(TARGETS_PATH, self.targets)

    async def targets(self, request: web.Request) -> web.Response:
        mesh = self._mesh()
        return web.json_response(target_groups(mesh.workloads, mesh.config.cluster))
