"""Pure parts of capture mode: the iptables rules, the pod's command line, the agent's plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.agent.agent import bootstrap_for, capture_spec
from shoal.agent.config import AgentConfig, app_env, make_plan
from shoal.errors import AgentError
from shoal.hosts.capture import CaptureSpec, rules
from shoal.hosts.pods import inner_args


def test_rules_capture_app_ports_inbound_and_everything_else_outbound() -> None:
    text = rules(CaptureSpec(app_ports=(8080,), exclude=(("10.61.0.1", 15443),)))
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert "-A SHOAL_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006" in lines
    out = [line for line in lines if line.startswith("-A SHOAL_OUTPUT")]
    # order matters: the sidecar's call to its own pod first, then what is never captured,
    # then the catch-all
    assert out == [
        "-A SHOAL_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp --dport 8080 -m owner --uid-owner 1337"
        " -j REDIRECT --to-ports 15006",
        "-A SHOAL_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A SHOAL_OUTPUT -o lo -j RETURN",
        "-A SHOAL_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A SHOAL_OUTPUT -d 10.61.0.1/32 -p tcp --dport 15443 -j RETURN",
        "-A SHOAL_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
    ]
    assert "-A SHOAL_DNS -p udp -j REDIRECT --to-ports 15053" in lines


def test_inner_args_drop_pod_flags_and_add_capture() -> None:
    args = ["-s", "web", "--pod", "web", "--network=net-a", "--subnet", "10.61.0.0/24",
            "--address", "1.2.3.4", "-p", "8080", "--", "python", "--pod", "x"]
    assert inner_args(args, "10.61.0.7") == [
        "-s", "web", "-p", "8080", "--capture", "--address", "10.61.0.7",
        "--", "python", "--pod", "x"]


def config(**kw: object) -> AgentConfig:
    base: dict = dict(service="web", port=8080, command=("app",), capture=True,
                      address="10.61.0.7", control_plane="https://10.61.0.1:15443",
                      xds="10.61.0.1:15012", run_dir=Path("/tmp/x"))
    base.update(kw)
    return AgentConfig(**base)  # type: ignore[arg-type]


def test_capture_plan_registers_the_pod_ip_and_app_port() -> None:
    ports = iter(range(30000, 30010))
    plan = make_plan(config(), pick_port=lambda: next(ports), suffix=lambda: "abcde")
    assert plan.inbound_port == plan.app_port == 8080
    assert plan.outbound_port == 0
    assert plan.bootstrap_path.parent == plan.envoy_dir != plan.run_dir
    meta = bootstrap_for(config(), plan)["node"]["metadata"]  # type: ignore[index]
    assert meta["INTERCEPTION_MODE"] == "REDIRECT"
    env = app_env(config(), plan, {"HTTP_PROXY": "http://elsewhere", "PATH": "/bin"})
    assert "HTTP_PROXY" not in env and env["PORT"] == "8080" and env["PATH"] == "/bin"
    spec = capture_spec(config(), plan)
    assert spec.app_ports == (8080,)
    assert set(spec.exclude) == {("10.61.0.1", 15443), ("10.61.0.1", 15012)}


@pytest.mark.parametrize("kw,flag", [
    (dict(address="127.0.0.1"), "--address"),
    (dict(inbound_port=15000), "--inbound-port"),
])
def test_capture_rejects_flags_that_make_no_sense(kw: dict, flag: str) -> None:
    with pytest.raises(AgentError, match=flag):
        make_plan(config(**kw), pick_port=lambda: 1)
