from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_helpers import AgentRun
from fake_ads import FakeAds
from fake_control_plane import FakeControlPlane


@pytest.fixture
async def control_plane(tmp_path: Path) -> AsyncIterator[FakeControlPlane]:
    cp = FakeControlPlane(lease_seconds=1.5, app_pid_file=tmp_path / "app" / "app.pid")
    await cp.start()
    yield cp
    await cp.stop()


@pytest.fixture
async def ads() -> AsyncIterator[FakeAds]:
    server = FakeAds()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def agent_factory(tmp_path: Path):
    runs: list[AgentRun] = []

    def make(control_plane: str, xds: str, *args: str, app_args: tuple[str, ...] = ()) -> AgentRun:
        run = AgentRun(tmp_path / f"agent{len(runs)}", control_plane, xds, list(args),
                       list(app_args))
        run.tmp.mkdir(parents=True)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.kill()
