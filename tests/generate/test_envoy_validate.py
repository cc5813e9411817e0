"""Every golden proxy's config, made static, passes ``envoy --mode validate``."""

from __future__ import annotations

from pathlib import Path

import pytest

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
