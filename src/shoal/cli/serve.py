"""`shoal control-plane`: run the control plane in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from shoal.control.config import DEFAULT_API_PORT, DEFAULT_XDS_PORT, Address, ControlPlaneConfig
from shoal.control.plane import ControlPlane
from shoal.logs import configure_logging


def default_home() -> Path:
    import os

    return Path(os.environ.get("SHOAL_HOME", Path.home() / ".shoal"))


async def serve(config: ControlPlaneConfig) -> None:
    plane = ControlPlane.build(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with plane.serving():
        await stop.wait()


def control_plane(
    api: Annotated[str, typer.Option(help="REST API listen address HOST:PORT.")
                   ] = f"127.0.0.1:{DEFAULT_API_PORT}",
    xds: Annotated[str, typer.Option(help="xDS (gRPC) listen address HOST:PORT.")
                   ] = f"127.0.0.1:{DEFAULT_XDS_PORT}",
    data_dir: Annotated[Path | None, typer.Option(
        help="Where the config store lives (default: $SHOAL_HOME/data).")] = None,
    store: Annotated[str, typer.Option(help="sqlite (persistent) or memory.")] = "sqlite",
    lease_ttl: Annotated[float, typer.Option(
        help="Seconds without heartbeat before a registered workload is removed.")] = 15.0,
    log_level: Annotated[str, typer.Option(envvar="SHOAL_LOG_LEVEL")] = "info",
) -> None:
    """Run the control plane (REST API + xDS server) in the foreground."""
    configure_logging(log_level)
    if store not in ("sqlite", "memory"):
        raise typer.BadParameter("must be sqlite or memory", param_hint="--store")
    config = ControlPlaneConfig(
        data_dir=data_dir or default_home() / "data",
        api=Address.parse(api), xds=Address.parse(xds), store=store, lease_ttl=lease_ttl,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
