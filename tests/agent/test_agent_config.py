from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import shoal.cli.run as cli_run
from shoal.agent import AgentConfig, app_env, make_plan
from shoal.agent.config import parse_labels, parse_upstream, upstream_env_name
from shoal.agent.registration import service_document, workload_document
from shoal.errors import AgentError


def test_parse_upstream():
    assert parse_upstream("ratings:9080").local_port is None
    u = parse_upstream("db.prod:5432=15432")
    assert (u.host, u.port, u.local_port) == ("db.prod", 5432, 15432)
    for bad in ("ratings", ":80", "x:notaport", "x:80=y", "x:70000"):
        with pytest.raises(AgentError, match="--upstream"):
            parse_upstream(bad)


def test_parse_labels():
    assert parse_labels(["version=v1", "tier=", "shoal.io/x=y"]) == {
        "version": "v1", "tier": "", "shoal.io/x": "y"}
    with pytest.raises(AgentError, match="--label"):
        parse_labels(["novalue"])


def test_upstream_env_name():
    assert upstream_env_name("ratings.default-x", 9080) == "SHOAL_UPSTREAM_RATINGS_DEFAULT_X_9080"


def test_plan_defaults_and_env():
    ports = iter([30001, 30002, 30003, 30004, 30005])
    cfg = AgentConfig(service="web", port=8080, command=("x",), run_dir=Path("/tmp/r"),
                      upstreams=(parse_upstream("db:5432"),))
    plan = make_plan(cfg, pick_port=lambda: next(ports), suffix=lambda: "zz9zz")
    assert plan.workload == "web-zz9zz"
    assert plan.upstreams[0].local_port == 30001
    assert (plan.admin_port, plan.outbound_port, plan.inbound_port) == (30002, 30003, 30004)
    assert plan.metrics_port == 30005  # picked last
    assert plan.app_port == 8080 and plan.bootstrap_path == Path("/tmp/r/envoy-bootstrap.json")
    env = app_env(cfg, plan, {"KEEP": "1"})
    assert env["KEEP"] == "1" and env["PORT"] == "8080"
    assert env["http_proxy"] == "http://127.0.0.1:30003"
    assert env["SHOAL_UPSTREAM_DB_5432"] == "127.0.0.1:30001"
    wl = workload_document(cfg, plan)
    assert wl["spec"]["ports"] == {"http": 30004} and wl["spec"]["address"] == "127.0.0.1"
    assert service_document(cfg)["metadata"] == {"name": "web", "namespace": "default"}


def test_plan_rejects_bad_input_naming_the_flag():
    cfg = AgentConfig(service="Bad_Name", port=0, command=(), protocol="udp")
    with pytest.raises(AgentError) as e:
        make_plan(cfg, pick_port=lambda: 1)
    msg = str(e.value)
    for flag in ("--service", "--port", "--protocol", "no application command"):
        assert flag in msg


def test_cli_passes_command_after_double_dash(monkeypatch):
    got = {}

    class FakeAgent:
        def __init__(self, config):
            got["config"] = config

        async def run(self):
            return 3

    monkeypatch.setattr(cli_run, "Agent", FakeAgent)
    res = CliRunner().invoke(cli_run.standalone_app(), [
        "run", "-s", "web", "-p", "8080", "-l", "version=v1", "-u", "db:5432", "--xds-sotw",
        "--", "python", "-m", "app", "--port", "1", "-s"])
    assert res.exit_code == 3, res.output
    cfg = got["config"]
    assert cfg.command == ("python", "-m", "app", "--port", "1", "-s")
    assert cfg.labels == {"version": "v1"} and cfg.upstreams[0].host == "db"
    assert cfg.xds_delta is False and cfg.service == "web" and cfg.port == 8080


def test_cli_bad_input_is_one_line(tmp_path):
    res = CliRunner().invoke(cli_run.standalone_app(), [
        "run", "-s", "web", "-p", "8080", "-u", "nonsense", "--run-dir", str(tmp_path),
        "--", "true"])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "--upstream" in res.output
