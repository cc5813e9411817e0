"""Transparent traffic capture with iptables, inside a pod's network namespace.

:func:`rules` is pure: it gives the ``iptables-restore`` text (nat table) for a
:class:`CaptureSpec`; :func:`apply` / :func:`remove` install it in the current network
namespace (the agent runs inside the pod) or in a named one. Like Istio's REDIRECT mode:

* PREROUTING: TCP to one of the app's ports -> the sidecar's inbound capture port;
* OUTPUT, in order: the sidecar's own connections to the pod's own address at an app port
  -> inbound capture (a call to itself still enters through the inbound listener);
  the sidecar's other connections (its uid) -> untouched; loopback -> untouched; the
  control-plane addresses the agent talks to -> untouched; any other TCP -> the sidecar's
  outbound capture port;
* DNS (UDP 53) from anyone but the sidecar -> the sidecar's DNS listener.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.hosts.netns import HostError, run

INBOUND_CHAIN = "SHOAL_INBOUND"
OUTPUT_CHAIN = "SHOAL_OUTPUT"
DNS_CHAIN = "SHOAL_DNS"
PROXY_UID = 1337  # the sidecar's uid (Istio's); its own traffic is never captured


@dataclass(frozen=True)
class CaptureSpec:
    app_ports: tuple[int, ...]  # inbound TCP to these ports goes through the sidecar
    proxy_uid: int = PROXY_UID
    outbound_port: int = 15001
    inbound_port: int = 15006
    dns_port: int = 15053
    exclude: tuple[tuple[str, int], ...] = ()  # (IPv4, port) the agent itself talks to


def rules(spec: CaptureSpec) -> str:
    """``iptables-restore --noflush`` input (nat table) for ``spec``."""
    uid = str(spec.proxy_uid)
    lines = [
        "*nat",
        f":{INBOUND_CHAIN} - [0:0]",
        f":{OUTPUT_CHAIN} - [0:0]",
        f":{DNS_CHAIN} - [0:0]",
        f"-A PREROUTING -p tcp -j {INBOUND_CHAIN}",
        f"-A OUTPUT -p tcp -j {OUTPUT_CHAIN}",
        f"-A OUTPUT -p udp --dport 53 -j {DNS_CHAIN}",
    ]
    for port in sorted(set(spec.app_ports)):
        lines.append(f"-A {INBOUND_CHAIN} -p tcp --dport {port} "
                     f"-j REDIRECT --to-ports {spec.inbound_port}")
        lines.append(f"-A {OUTPUT_CHAIN} -o lo ! -d 127.0.0.1/32 -p tcp --dport {port} "
                     f"-m owner --uid-owner {uid} -j REDIRECT --to-ports {spec.inbound_port}")
    lines += [
        f"-A {OUTPUT_CHAIN} -m owner --uid-owner {uid} -j RETURN",
        f"-A {OUTPUT_CHAIN} -o lo -j RETURN",
        f"-A {OUTPUT_CHAIN} -d 127.0.0.0/8 -j RETURN",
    ]
    for ip, port in sorted(set(spec.exclude)):
        lines.append(f"-A {OUTPUT_CHAIN} -d {ip}/32 -p tcp --dport {port} -j RETURN")
    lines += [
        f"-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {spec.outbound_port}",
        f"-A {DNS_CHAIN} -m owner --uid-owner {uid} -j RETURN",
        f"-A {DNS_CHAIN} -p udp -j REDIRECT --to-ports {spec.dns_port}",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def _in(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def remove(netns: str | None = None) -> None:
    """Take shoal's capture rules out (idempotent)."""
    for parent, chain, match in (("PREROUTING", INBOUND_CHAIN, ["-p", "tcp"]),
                                 ("OUTPUT", OUTPUT_CHAIN, ["-p", "tcp"]),
                                 ("OUTPUT", DNS_CHAIN, ["-p", "udp", "--dport", "53"])):
        rule = ["iptables", "-w", "10", "-t", "nat", "-D", parent, *match, "-j", chain]
        for _ in range(16):  # several copies if apply() was interrupted
            if run(_in(netns, rule), check=False).returncode != 0:
                break
        for op in ("-F", "-X"):
            run(_in(netns, ["iptables", "-w", "10", "-t", "nat", op, chain]), check=False)


def apply(spec: CaptureSpec, netns: str | None = None) -> None:
    """Install the rules of ``spec`` (replacing earlier ones) in ``netns`` or here."""
    remove(netns)
    argv = _in(netns, ["iptables-restore", "-w", "10", "--noflush"])
    try:
        done = subprocess.run(argv, input=rules(spec), capture_output=True, text=True,
                              timeout=60)
    except FileNotFoundError:
        raise HostError("`iptables-restore` not found (apt-get install iptables)") from None
    if done.returncode != 0:
        raise HostError(f"installing the capture rules failed: {done.stderr.strip()}")


def installed(netns: str | None = None) -> str:
    """The nat table as ``iptables-save`` prints it (for humans and tests)."""
    return run(_in(netns, ["iptables-save", "-t", "nat"])).stdout


def resolve_excludes(addresses: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """(host, port) -> (IPv4, port) for every address of each host (names resolved now)."""
    out: set[tuple[str, int]] = set()
    for host, port in addresses:
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:
            raise HostError(f"cannot resolve {host}: {e}") from None
        out.update((str(info[4][0]), port) for info in infos)
    return tuple(sorted(out))
