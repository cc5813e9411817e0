"""http_sd target groups of the workloads' metrics endpoints, and the prometheus.yml of
`shoal prometheus config --mode workloads` (checked by promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shoal.api import Resource, parse_yaml
from shoal.ca.authority import WORKLOAD_DNS_NAME
from shoal.registry.snapshot import MeshConfig, MeshSnapshot
from shoal.telemetry.discovery import metrics_port, target_groups
from shoal.telemetry.scrape import (
    METRICS_PATH,
    METRICS_PORT_ANNOTATION,
    TARGETS_PATH,
    WORKLOADS_JOB,
    ScrapeFiles,
    workloads_scrape_config,
)
from shoal.testing.pki import TestCA

PROMTOOL = shutil.which("promtool")


def workload(name: str, address: str = "10.0.0.2", port: str | None = "15020",
             labels: str = "app: web, version: v2", annotations: str = "") -> Resource:
    notes = {**({METRICS_PORT_ANNOTATION: port} if port is not None else {})}
    extra = ", ".join(f"{k!r}: {v!r}" for k, v in notes.items())
    (res,) = parse_yaml(f"""
apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: shop, annotations: {{{extra}{annotations}}}}}
spec: {{address: '{address}', labels: {{{labels}}}, ports: {{http: 31000}}}}
""")
    return res


def test_one_group_per_workload_with_a_metrics_port():
    groups = target_groups([workload("web-1"), workload("web-2", "10.0.0.3", "15021")])
    assert groups == [
        {"targets": ["10.0.0.2:15020"], "labels": {
            "namespace": "shop", "workload": "web-1", "service": "web", "version": "v2"}},
        {"targets": ["10.0.0.3:15021"], "labels": {
            "namespace": "shop", "workload": "web-2", "service": "web", "version": "v2"}}]


def test_cluster_label_and_addresses():
    (group,) = target_groups([workload("web-1", "fd00::2", labels="app: web")], "east")
    assert group == {"targets": ["[fd00::2]:15020"], "labels": {
        "namespace": "shop", "workload": "web-1", "service": "web", "cluster": "east"}}
    labelled = workload("web-2", labels="app: web, topology.istio.io/cluster: west")
    assert target_groups([labelled], "east")[0]["labels"]["cluster"] == "west"


def test_left_out_without_a_port_a_valid_port_or_when_remote():
    remote = workload("web-1.b", annotations=", 'multicluster.shoal.io/remote-cluster': b")
    out = [workload("none", port=None), workload("bad", port="http"),
           workload("zero", port="0"), workload("big", port="65536"),
           workload("unicode", port="\uff11\uff15\uff10\uff12\uff10"), remote]
    assert target_groups(out) == []
    assert [metrics_port(w) for w in out[:5]] == [None] * 5


def test_from_a_mesh_snapshot_including_synthetic_workloads():
    (entry,) = parse_yaml("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec: {hosts: [api.example.com], ports: [{number: 443, name: tls, protocol: TLS}],
       resolution: STATIC, endpoints: [{address: 192.0.2.1}]}
""")
    mesh = MeshSnapshot.build([workload("web-1"), entry], 1, MeshConfig(cluster="east"))
    assert [g["labels"]["workload"] for g in target_groups(mesh.workloads,
                                                           mesh.config.cluster)] == ["web-1"]


def files(directory: Path) -> ScrapeFiles:
    return ScrapeFiles(token=str(directory / "token"), ca=str(directory / "ca.pem"),
                       cert=str(directory / "cert.pem"), key=str(directory / "key.pem"))


def test_workloads_config():
    config = yaml.safe_load(workloads_scrape_config(
        "http://127.0.0.1:15080", files(Path("/p")), interval="2s", refresh="10s"))
    workloads, control_plane = config["scrape_configs"]
    assert workloads["job_name"] == WORKLOADS_JOB
    assert (workloads["scheme"], workloads["metrics_path"]) == ("https", METRICS_PATH)
    assert workloads["tls_config"] == {
        "ca_file": "/p/ca.pem", "cert_file": "/p/cert.pem", "key_file": "/p/key.pem",
        "server_name": WORKLOAD_DNS_NAME, "insecure_skip_verify": False}
    assert workloads["http_sd_configs"] == [{
        "url": f"http://127.0.0.1:15080{TARGETS_PATH}", "refresh_interval": "10s",
        "authorization": {"type": "Bearer", "credentials_file": "/p/token"}}]
    assert "honor_labels" not in workloads  # target labels are the control plane's
    assert control_plane["job_name"] == "shoal"
    assert control_plane["static_configs"] == [{"targets": ["127.0.0.1:15080"]}]
    assert control_plane["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": "istio_.*", "action": "drop"}]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_workloads_config(tmp_path: Path):
    ca = TestCA()
    ca.write(tmp_path / "ca.pem")
    ca.leaf(uris=["spiffe://cluster.local/ns/shoal-system/sa/prometheus"]).write(
        tmp_path, "cert")
    (tmp_path / "cert.key").rename(tmp_path / "key.pem")
    (tmp_path / "token").write_text("t\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(workloads_scrape_config("http://127.0.0.1:15080", files(tmp_path)))
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
