"""`shoal slo status` and `shoal dashboard` against the control plane of conftest."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from shoal.cli.main import app
from shoal.cli.slo import budget_bar
from tests.dashboard.conftest import Served


def test_slo_status_table_and_json(dashboard_cp: Served):
    runner = CliRunner()
    out = runner.invoke(app, ["-c", dashboard_cp.url, "slo", "status"])
    assert out.exit_code == 0, out.output
    # stdout only: the control plane serving this test runs in this process, and its log
    # lines (on whatever sys.stderr is at the time) land in the runner's stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if "/" in line}
    assert "CRITICAL" in lines["default/reviews-availability"]
    assert "OK" in lines["default/details-availability"]
    assert "(20m seen)" in lines["default/details-availability"]
    assert "reviews-availability: burning" in out.stdout
    js = runner.invoke(app, ["-c", dashboard_cp.url, "slo", "status", "-o", "json"])
    assert js.exit_code == 0, (js.output, js.exception)
    data = {s["name"]: s for s in json.loads(js.stdout)}
    assert data["reviews-availability"]["errorBudget"]["remaining"] < 0
    assert data["productpage-latency"]["sli"] == "latency"


def test_budget_bar():
    assert budget_bar(0.5, 10) == "█████░░░░░   50.0%"
    assert budget_bar(-2, 4) == "░░░░ -200.0%"


def test_dashboard_prints_the_url(dashboard_cp: Served):
    out = CliRunner().invoke(app, ["-c", dashboard_cp.url, "dashboard", "--no-open"])
    assert out.exit_code == 0 and out.stdout.strip() == f"{dashboard_cp.url}/ui/"
    down = CliRunner().invoke(app, ["-c", "http://127.0.0.1:9", "dashboard", "--no-open"])
    assert down.exit_code != 0
