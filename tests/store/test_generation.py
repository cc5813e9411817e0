"""metadata.generation: 1 when created, +1 when the spec changes, kept otherwise (as
Kubernetes does; Gateway API status reports it as observedGeneration)."""

from __future__ import annotations

import pytest

from shoal.api import load_resource
from shoal.api.parse import parse_yaml
from shoal.store.memory import MemoryStore

DOC = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {name: web, labels: {team: a}, generation: 41}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}
"""


@pytest.mark.parametrize("change", ["spec", "labels", "nothing"])
async def test_generation_counts_spec_changes(change: str) -> None:
    store = MemoryStore(loads=load_resource)
    await store.apply(parse_yaml(DOC))  # a generation given by a client is ignored
    [r] = (await store.list("Service"))[0]
    assert r.metadata.generation == 1
    edited = {"spec": DOC.replace("8080", "8081"), "labels": DOC.replace("team: a", "team: b"),
              "nothing": DOC}[change]
    await store.apply(parse_yaml(edited))
    [r] = (await store.list("Service"))[0]
    assert r.metadata.generation == (2 if change == "spec" else 1)
