"""The synthetic mesh the control-plane benchmark applies (YAML documents)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.cli.client import ApiClient

NAMESPACE = "default"
PORT = 8080


def service_name(i: int) -> str:
    return f"svc-{i}"


def workload_name(i: int, j: int) -> str:
    return f"svc-{i}-v{j + 1}"


def vhost_name(i: int) -> str:
    return f"{service_name(i)}.{NAMESPACE}.svc.cluster.local:{PORT}"


def cluster_name(i: int) -> str:
    """The outbound cluster of service ``i`` (every endpoint of its port)."""
    return f"outbound|{PORT}||{service_name(i)}.{NAMESPACE}.svc.cluster.local"


EXTRA_WORKLOAD = "extra-workload"
EXTRA_ADDRESS = "10.254.0.1"  # outside 10.<i // 250>.<i % 250>.<j> of mesh_yaml


def extra_workload(i: int) -> str:
    """One more Workload of service ``i`` (the endpoint rounds register and remove it)."""
    name = service_name(i)
    return f"""apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: {EXTRA_WORKLOAD}, namespace: {NAMESPACE}}}
spec:
  address: {EXTRA_ADDRESS}
  labels: {{app: {name}, version: v1}}
  ports: {{http: {PORT}}}"""


def mesh_yaml(services: int, workloads_per_service: int = 2) -> str:
    """Services, their Workloads (labelled v1, v2, ...), a DestinationRule with one subset
    per version and an 80/20 VirtualService per service."""
    docs = []
    for i in range(services):
        name = service_name(i)
        docs.append(f"""apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {PORT}, protocol: http}}]""")
        for j in range(workloads_per_service):
            docs.append(f"""apiVersion: mesh.shoal.io/v1alpha1
kind: Workload
metadata: {{name: {workload_name(i, j)}, namespace: {NAMESPACE}}}
spec:
  address: 10.{i // 250}.{i % 250}.{j + 1}
  labels: {{app: {name}, version: v{j + 1}}}
  ports: {{http: {PORT}}}""")
        subsets = "\n".join(f"  - {{name: v{j + 1}, labels: {{version: v{j + 1}}}}}"
                            for j in range(workloads_per_service))
        docs.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  host: {name}
  subsets:
{subsets}""")
        docs.append(virtual_service(i, 80))
    return "\n---\n".join(docs) + "\n"


def apply_mesh(client: ApiClient, services: int, part: int = 1000) -> None:
    """Apply ``mesh_yaml(services)`` in parts of ``part`` documents: one apply is bounded
    (api/limits.py; the etcd store: one transaction of at most MAX_TXN_OPS)."""
    docs = mesh_yaml(services).split("\n---\n")
    for k in range(0, len(docs), part):
        client.apply("\n---\n".join(docs[k:k + part]), source="bench")


def virtual_service(i: int, v1_weight: int) -> str:
    name = service_name(i)
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  hosts: [{name}]
  http:
  - route:
    - destination: {{host: {name}, subset: v1}}
      weight: {v1_weight}
    - destination: {{host: {name}, subset: v2}}
      weight: {100 - v1_weight}"""
