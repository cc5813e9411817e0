"""The demo's workloads, as data: what ``shoal up`` starts, each via the agent.

Their Services and DestinationRules are in ``bookinfo.yaml``.

Every service port is 9080 (what callers use: ``http://reviews:9080``). Several workloads
share a host, so whoever starts them must give each its own app port
(``shoal run --app-port``); :func:`run_args` does that.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

SERVICE_PORT = 9080


@dataclass(frozen=True)
class DemoWorkload:
    service: str
    version: str
    port: int = SERVICE_PORT
    protocol: str = "http"
    upstreams: tuple[str, ...] = ()  # HOST:PORT for `shoal run --upstream`; none needed
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.version}"

    @property
    def service_account(self) -> str:
        """Istio's bookinfo names (``bookinfo-productpage``, ...), so the principals in
        Istio's docs, ``cluster.local/ns/default/sa/bookinfo-productpage``, work as
        written."""
        return f"bookinfo-{self.service}"

    @property
    def labels(self) -> dict[str, str]:
        return {"app": self.service, "version": self.version}

    @property
    def command(self) -> tuple[str, ...]:
        return (sys.executable, "-m", f"shoal.demo.{self.service}")


def _wl(service: str, version: str = "v1") -> DemoWorkload:
    return DemoWorkload(service, version, env={"SHOAL_DEMO_VERSION": version})


WORKLOADS: tuple[DemoWorkload, ...] = (
    _wl("productpage"),
    _wl("details"),
    _wl("reviews", "v1"),
    _wl("reviews", "v2"),
    _wl("reviews", "v3"),
    _wl("ratings"),
)
def run_args(w: DemoWorkload, *, app_port: int, namespace: str = "default") -> list[str]:
    """Arguments for ``shoal run`` (after ``run``) that start ``w`` with its sidecar.

    The env of ``w`` must be added to the agent's own environment (the app inherits it)."""
    args = ["--service", w.service, "--port", str(w.port), "--protocol", w.protocol,
            "--namespace", namespace, "--app-port", str(app_port), "--name", w.name,
            "--service-account", w.service_account]
    for k, v in w.labels.items():
        if k != "app":
            args += ["--label", f"{k}={v}"]
    for u in w.upstreams:
        args += ["--upstream", u]
    return [*args, "--", *w.command]
