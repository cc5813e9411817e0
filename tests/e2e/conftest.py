"""Fixtures that run real control planes, agents, Envoys and apps."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for


def agent_info(agent: AgentProcess, timeout: float = 30.0) -> dict[str, Any]:
    """The ports an agent chose (it writes them to <run-dir>/agent.json)."""
    path = agent.cp.workdir / "run" / agent.name / "agent.json"
    return wait_for(lambda: path.exists() and json.loads(path.read_text()), timeout,
                    f"{path}")


def app_command(kind: str) -> list[str]:
    return [sys.executable, "-m", "shoal.testing.apps", kind]


@pytest.fixture
def control_plane(tmp_path: Path):
    with ControlPlaneProcess(tmp_path, lease_ttl=6.0) as cp:
        yield cp
