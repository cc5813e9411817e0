"""Prometheus scraping every workload directly (Istio's convention; docs/adr/0028): the
contract between the agents that serve the metrics, the control plane that lists them
(:mod:`shoal.telemetry.discovery`) and ``shoal prometheus config --mode workloads``
that configures Prometheus.

* Each agent serves its proxy's metrics at ``https://<address>:<port>/stats/prometheus``
  (:mod:`shoal.agent.metrics`) with its workload certificate and answers one client
  identity only, the scraper's (:func:`default_scraper`).
* It registers the port in its Workload's annotation :data:`METRICS_PORT_ANNOTATION`.
* The control plane lists every such workload for Prometheus' ``http_sd_configs``.
* Prometheus verifies the agents' certificates against the mesh roots under the DNS name
  every workload certificate carries (:data:`shoal.ca.authority.WORKLOAD_DNS_NAME`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from shoal.ca.authority import WORKLOAD_DNS_NAME
from shoal.ca.spiffe import SpiffeId
from shoal.registry.snapshot import MeshConfig

METRICS_PATH = "/stats/prometheus"
METRICS_PORT_ANNOTATION = "shoal.io/metrics-port"
TARGETS_PATH = "/api/v1/prometheus/targets"
SCRAPER_SERVICE_ACCOUNT = "prometheus"
WORKLOADS_JOB = "shoal-workloads"


def default_scraper(trust_domain: str = MeshConfig.trust_domain,
                    root_namespace: str = MeshConfig.root_namespace) -> str:
    """The one identity an agent's metrics endpoint answers unless told otherwise."""
    return SpiffeId(trust_domain, root_namespace, SCRAPER_SERVICE_ACCOUNT).uri


@dataclass(frozen=True)
class ScrapeFiles:
    """What Prometheus reads: the operator token (http_sd), the mesh roots, and the
    scraper's workload certificate and key."""

    token: str
    ca: str
    cert: str
    key: str


def _api(api_url: str) -> tuple[str, str]:
    scheme, _, rest = api_url.partition("://")
    if not rest:
        scheme, rest = "http", api_url
    return scheme, rest.split("/")[0]


def workloads_scrape_config(api_url: str, files: ScrapeFiles, *, interval: str = "5s",
                            refresh: str = "30s", job: str = "shoal") -> str:
    """``prometheus.yml`` for the ``workloads`` mode: every workload's endpoint found by
    ``http_sd_configs`` on the control plane at ``api_url`` and scraped over mTLS; the
    control plane's ``/metrics`` scraped for its own ``shoal_*`` metrics only (its
    ``istio_*`` series are the same counts as the workloads': keeping both would count
    every request twice). ``job`` names the control plane's job, as in the default
    mode; the workloads' job is :data:`WORKLOADS_JOB`."""
    scheme, host = _api(api_url)
    def bearer() -> dict[str, str]:  # a fresh dict each time: no YAML anchors
        return {"type": "Bearer", "credentials_file": files.token}

    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": WORKLOADS_JOB, "scheme": "https", "metrics_path": METRICS_PATH,
             "tls_config": {"ca_file": files.ca, "cert_file": files.cert,
                            "key_file": files.key, "server_name": WORKLOAD_DNS_NAME,
                            "insecure_skip_verify": False},
             "http_sd_configs": [{"url": f"{scheme}://{host}{TARGETS_PATH}",
                                  "refresh_interval": refresh, "authorization": bearer()}]},
            {"job_name": job, "scheme": scheme, "metrics_path": "/metrics",
             "authorization": bearer(), "static_configs": [{"targets": [host]}],
             "metric_relabel_configs": [{"source_labels": ["__name__"],
                                         "regex": "istio_.*", "action": "drop"}]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)
