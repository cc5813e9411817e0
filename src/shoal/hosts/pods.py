"""``shoal run --pod NAME --network NET``: a workload in its own network namespace.

The ``shoal run`` process on the host makes the network (if needed) and the pod, writes
the pod's /etc/hosts and /etc/resolv.conf, then runs the same ``shoal run`` command
inside the pod with ``--capture --address <pod IP>`` (the agent, Envoy and the app all live
in the pod; the agent installs the iptables capture) and, unless given, ``--dns-upstream``
for each of the host's nameservers (names outside the mesh). Signals are passed on; when the
inner agent has exited, the pod is deleted and its exit status returned.

The pod's ``eth0`` gets no IPv6 (the capture is IPv4 only: a link-local address would let
pods on one bridge reach each other's apps around their sidecars). Inside, the agent runs
the app as ``--app-user`` in its sandbox (:mod:`shoal.hosts.sandbox`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from shoal.agent.app import exit_status
from shoal.hosts import netns
from shoal.hosts.netns import HostError

log = logging.getLogger("shoal.hosts.pods")

# `shoal run` flags the host side consumes; inside the pod they make no sense
POD_FLAGS = ("--pod", "--network", "--subnet", "--pod-address", "--address")


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's IPv4 nameservers a pod can use (loopback ones, such as systemd-resolved's
    127.0.0.53, are the host's own and unreachable from a pod: left out)."""
    out = []
    try:
        text = resolv_conf.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                ip = ipaddress.ip_address(words[1])
            except ValueError:
                continue
            if ip.version == 4 and not ip.is_loopback:
                out.append(str(ip))
    return out


def disable_ipv6(pod: netns.Pod) -> None:
    """No IPv6 on the pod's eth0 (nor on interfaces added later); loopback keeps ::1."""
    script = ("for f in /proc/sys/net/ipv6/conf/eth0/disable_ipv6 "
              "/proc/sys/net/ipv6/conf/default/disable_ipv6; do "
              "[ ! -e $f ] || echo 1 > $f || exit 1; done")
    done = netns.run(pod.command(["sh", "-c", script]), check=False)
    if done.returncode != 0:
        raise HostError(f"pod {pod.name}: cannot turn IPv6 off on eth0: "
                        f"{done.stderr.strip()}")


def inner_args(args: Sequence[str], address: str) -> list[str]:
    """``args`` (of ``shoal run``) without the pod flags, plus ``--capture --address``."""
    head, tail = list(args), []
    if "--" in head:
        i = head.index("--")
        head, tail = head[:i], head[i:]
    out: list[str] = []
    skip = False
    for arg in head:
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in POD_FLAGS:
            skip = "=" not in arg
            continue
        if arg == "--capture":
            continue
        out.append(arg)
    return [*out, "--capture", "--address", address, *tail]


@contextlib.contextmanager
def _forward_signals(child: subprocess.Popen[bytes]) -> Iterator[None]:
    def forward(sig: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(sig)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_in_pod(*, pod: str, network: str, subnet: str | None, address: str | None,
               namespace: str, args: Sequence[str], domain: str = "cluster.local") -> int:
    """Make the pod, run ``shoal run ARGS --capture ...`` in it, delete it; exit status."""
    if (reason := netns.unavailable()) is not None:
        raise HostError(f"--pod: {reason} (without root, leave out --pod: docs/hosts.md)")
    net = netns.create_network(network, subnet) if subnet else netns.find_network(network)
    if net is None:
        raise HostError(f"network {network} does not exist; give --subnet to create it")
    p = netns.create_pod(pod, net, address)
    log.info("pod ready", extra={"pod": p.name, "netns": p.netns, "address": str(p.address),
                                 "network": net.name, "bridge": net.bridge})
    try:
        disable_ipv6(p)
        netns.write_etc(p, search=[f"{namespace}.svc.{domain}", f"svc.{domain}", domain])
        inner = inner_args(args, str(p.address))
        if not any(a.split("=", 1)[0] == "--dns-upstream" for a in args):
            resolvers = host_resolvers()
            if not resolvers:
                log.warning("no usable nameserver in the host's /etc/resolv.conf: names "
                            "outside the mesh will not resolve in the pod (--dns-upstream)")
            inner[:0] = [x for r in resolvers for x in ("--dns-upstream", r)]
        argv = p.command([sys.executable, "-m", "shoal", "run", *inner])
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        with _forward_signals(child):
            code = child.wait()
        return exit_status(code)
    finally:
        netns.delete_pod(p)
        log.info("pod deleted", extra={"pod": p.name})
