"""Multi-cluster (multi-primary): several clusters, each with its own control plane.

* :mod:`.labels`: the cluster/network labels and how a control plane sees its own and
  remote workloads (Istio's ``topology.istio.io/*`` labels).
* :mod:`.remote`: following a remote cluster's Workloads, Services and Gateways over its
  REST discovery stream (``shoal cluster add``, a "remote secret").
* :mod:`.view`: the local store plus every remote cluster, as one store for the sync loop.
* :mod:`.api`: the REST routes (``/api/v1/clusters``, ``/api/v1/discovery``).

See docs/multicluster.md and docs/adr/0016-multi-cluster.md.
"""
