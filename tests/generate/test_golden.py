"""Golden files: generated config for the fixture proxies, as stable JSON.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/generate``
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from shoal.xds.generate import GenerationContext, generate
from shoal.xds.types import SHORT_NAMES, ProxySnapshot

from .conftest import GOLDEN_PROXIES

GOLDEN = Path(__file__).parent / "golden"


def as_json(snap: ProxySnapshot) -> str:
    doc: dict[str, Any] = {"mesh_revision": snap.mesh_revision}
    for type_url, short in sorted(SHORT_NAMES.items(), key=lambda kv: kv[1]):
        items = snap.get(type_url).items
        if items:
            doc[short] = {
                name: json_format.MessageToDict(items[name], preserving_proto_field_name=True)
                for name in sorted(items)
            }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


@pytest.mark.parametrize("node_id", sorted(GOLDEN_PROXIES))
def test_golden(ctx: GenerationContext, node_id: str) -> None:
    got = as_json(generate(ctx, GOLDEN_PROXIES[node_id]))
    path = GOLDEN / f"{node_id}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1"
    assert got == path.read_text(), f"{path} differs; if intended, run with UPDATE_GOLDEN=1"


def test_generation_is_deterministic(mesh) -> None:
    for p in GOLDEN_PROXIES.values():
        a = generate(GenerationContext(mesh), p)
        b = generate(GenerationContext(mesh), p)
        assert as_json(a) == as_json(b)
        assert a.version == b.version
