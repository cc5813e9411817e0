"""Fixtures that run real control planes, agents, Envoys and apps."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.cli.credentials import token_for
from shoal.cli.procs import LocalProcesses, marked_processes
from shoal.testing.local import (
    AgentProcess,
    ControlPlaneProcess,
    free_port,
    wait_for,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


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


def auth_for(api: str, home: Path) -> dict[str, str]:
    """``Authorization`` for the control plane at API, as the CLI finds it in HOME."""
    token = token_for(api, home)
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class Up:
    home: Path
    api: str
    page: str

    def shoal(self, *args: str, check: bool = True, stdin: str | None = None
              ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SHOAL_HOME": str(self.home), "SHOAL_CONTROL_PLANE": self.api}
        proc = subprocess.run([sys.executable, "-m", "shoal", *args], env=env, text=True,
                              capture_output=True, timeout=120, input=stdin)
        if check and proc.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def reviews(self, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
        """Who served reviews for n product-page requests (productpage -> reviews)."""
        out: Counter[str] = Counter()
        with httpx.Client(timeout=10) as http:
            for _ in range(n):
                r = http.get(f"{self.page.rsplit('/', 1)[0]}/api/v1/products/0/reviews",
                             headers=headers or {})
                r.raise_for_status()
                out[r.json()["served_by"]] += 1
        return out

    def run_dir(self, workload: str) -> Path:
        return self.home / "run" / workload

    def agent(self, workload: str) -> dict[str, Any]:
        return json.loads((self.run_dir(workload) / "agent.json").read_text())

    def admin(self, workload: str) -> str:
        return f"http://127.0.0.1:{self.agent(workload)['adminPort']}"

    def inbound_requests(self, workload: str) -> int:
        port = self.agent(workload)["inboundPort"]
        return self.stat(workload, f"http.inbound_{port}.downstream_rq_total")

    def stat(self, workload: str, name: str) -> int:
        pattern = "^" + re.escape(name) + "$"
        text = httpx.get(f"{self.admin(workload)}/stats", params={"filter": pattern},
                         timeout=5).text
        values = [int(line.rsplit(": ", 1)[1]) for line in text.splitlines() if ": " in line]
        return sum(values)

    @contextlib.contextmanager
    def shoal_input(self, text: str) -> Iterator[str]:
        """A temporary YAML file holding ``text`` (for `shoal apply -f`)."""
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.home) as f:
            f.write(text)
            f.flush()
            yield f.name

    @property
    def auth(self) -> dict[str, str]:
        """The operator credential `shoal up` left for its user (in its credentials)."""
        return auth_for(self.api, self.home)

    def dashboard(self, page: str = "overview") -> str:
        """The dashboard's URL, signed in (the token in the fragment, as `shoal dashboard`
        opens it)."""
        return f"{self.api}/ui/#token={self.auth['Authorization'][7:]}&page={page}"

    def revision(self) -> int:
        return httpx.get(f"{self.api}/api/v1/resources", headers=self.auth,
                         timeout=5).json()["revision"]


@pytest.fixture(scope="module")
def up(tmp_path_factory) -> Any:
    home = tmp_path_factory.mktemp("home")
    api_port, xds_port, page_port = free_port(), free_port(), free_port()
    mesh = Up(home, f"http://127.0.0.1:{api_port}",
              f"http://127.0.0.1:{page_port}/productpage")
    try:
        mesh.shoal("up", "--api-port", str(api_port), "--xds-port", str(xds_port),
                   "--agent-api-port", str(free_port()), "--secure-xds-port", str(free_port()),
                   "--port", str(page_port), "--timeout", "90")
        yield mesh
    finally:
        state = LocalProcesses(home).load()
        mesh.shoal("down", check=False)
        if state is not None:
            leftover = marked_processes(state.session)
            assert leftover == [], f"shoal down left processes: {leftover}"
