"""Every golden proxy's config, made static, passes ``envoy --mode validate``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from shoal.registry.snapshot import MeshSnapshot
from shoal.xds.generate import GenerationContext, generate

from .conftest import GOLDEN_PROXIES
from .envoy_check import envoy_binary, envoy_validate, static_bootstrap

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary"),
]


@pytest.mark.parametrize("node_id", sorted(GOLDEN_PROXIES))
def test_envoy_accepts(ctx: GenerationContext, node_id: str, tmp_path: Path) -> None:
    boot = static_bootstrap(generate(ctx, GOLDEN_PROXIES[node_id]), node_id)
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    assert "OK" in res.stdout


def test_envoy_accepts_the_tracer(mesh: MeshSnapshot, tmp_path: Path) -> None:
    """Tracing is off by default (docs/adr/0031), so the golden proxies have no tracer:
    one of them with tracing on."""
    traced = replace(mesh, config=replace(mesh.config, trace_sampling=1.0))
    node_id = "productpage-v1.default"
    boot = static_bootstrap(generate(GenerationContext(traced), GOLDEN_PROXIES[node_id]),
                            node_id)
    res = envoy_validate(boot, tmp_path / "bootstrap.json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
