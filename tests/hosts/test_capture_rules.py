"""Pure parts of capture mode: the iptables rules, the pod's command line, the agent's plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2

from shoal.agent.agent import bootstrap_for, capture_spec
from shoal.agent.config import AgentConfig, app_env, make_plan, parse_dns_upstream, validate
from shoal.errors import AgentError, ValidationError
from shoal.hosts import pods
from shoal.hosts.capture import CaptureSpec, rules
from shoal.hosts.pods import inner_args
from shoal.xds.node import CaptureMetadata, node_metadata, parse_node


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


def test_pods_use_the_hosts_reachable_nameservers(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n"
                    "nameserver fd00::1\nnameserver 192.168.1.1\nsearch example\n")
    # loopback (the host's own stub) and IPv6 (not captured) are no use in a pod
    assert pods.host_resolvers(conf) == ["10.0.0.2", "192.168.1.1"]
    assert pods.host_resolvers(tmp_path / "missing") == []


def test_dns_upstreams_are_checked() -> None:
    assert parse_dns_upstream("10.0.0.2") == "10.0.0.2:53"
    assert parse_dns_upstream("10.0.0.2:5353") == "10.0.0.2:5353"
    for bad in ("resolver.example", "10.0.0.2:0", "fd00::1", "10.0.0.2:x"):
        with pytest.raises(AgentError, match="--dns-upstream"):
            parse_dns_upstream(bad)
    with pytest.raises(AgentError, match="--dns-upstream is for pods"):
        validate(AgentConfig(service="web", port=8080, command=("x",),
                             dns_upstreams=("10.0.0.2:53",)))


def test_node_metadata_carries_the_dns_upstreams() -> None:
    meta = CaptureMetadata(workload="web-1", outbound_port=0, app_ports={"http": 8080},
                           dns_upstreams=("10.0.0.2:53",))
    node = base_pb2.Node(id="web-1.default")
    node.metadata.update(node_metadata(meta, "default"))
    proxy = parse_node(node)
    assert isinstance(proxy.metadata, CaptureMetadata)
    assert proxy.metadata.dns_upstreams == ("10.0.0.2:53",)
    node.metadata.update({"DNS_UPSTREAMS": ["resolver:53"]})
    with pytest.raises(ValidationError, match="DNS_UPSTREAMS"):
        parse_node(node)
