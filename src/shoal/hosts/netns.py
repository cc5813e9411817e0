"""Network-namespace "pods" on Linux bridges: the privileged way to run a workload.

A :class:`Network` is one Linux bridge in the host namespace whose address (the first
host of the subnet) is the gateway of its pods and the address where host-side services
(control planes, gateways) are reachable. A :class:`Pod` is a network namespace with one
veth pair: ``eth0`` inside (the pod's address, default route via the gateway) and the host
end enslaved to the bridge.

Every object is named after its shoal name so :func:`cleanup` can find it again:

* network namespace ``shoal-<pod>`` (``ip netns``; names may be long),
* bridge ``shoal-<network>`` when that fits the 15-character limit of Linux interface
  names, ``shbr-<hash>`` otherwise; its alias is ``shoal:network:<network>``,
* host end of a pod's veth ``shv<hash>`` with alias ``shoal:pod:<pod>``,
* iptables rules in the ``SHOAL-FORWARD`` / ``SHOAL-ISOLATE`` chains, commented
  ``shoal:<network>`` or ``shoal:<network>:<network>``.

Needs root, iproute2 and iptables; :func:`unavailable` says why not when they are missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import AgentError, Conflict

NETNS_PREFIX = "shoal-"
BRIDGE_HASH_PREFIX = "shbr-"  # bridges whose "shoal-<network>" name is too long
FORWARD_CHAIN = "SHOAL-FORWARD"
ISOLATE_CHAIN = "SHOAL-ISOLATE"
NAT_CHAIN = "SHOAL-POSTROUTING"  # nat table: pods reach beyond the host, masqueraded
# (table, chain, the built-in chain that jumps to it); filter: ISOLATE is checked first
_CHAINS = (("filter", FORWARD_CHAIN, "FORWARD"), ("filter", ISOLATE_CHAIN, "FORWARD"),
           ("nat", NAT_CHAIN, "POSTROUTING"))
NETNS_ETC = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc
_LOCK = Path("/run/shoal-netns.lock")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class HostError(AgentError):
    """A host networking command (``ip``, ``iptables``) failed; the message has its stderr."""


@dataclass(frozen=True)
class Network:
    """One L2 network = one Linux bridge in the host namespace."""

    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address


@dataclass(frozen=True)
class Pod:
    """A network namespace with its own address on a :class:`Network`."""

    name: str
    netns: str
    network: Network
    address: ipaddress.IPv4Address

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the pod's network namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    @property
    def etc_dir(self) -> Path:
        """Files here replace their /etc namesakes for commands run with :meth:`command`."""
        return NETNS_ETC / self.netns


# --- names ---------------------------------------------------------------------------------

def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name) or len(name) > 63:
        raise HostError(f"{kind} name {name!r}: must be a lowercase DNS-1123 label")


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def bridge_name(network: str) -> str:
    full = NETNS_PREFIX + network
    return full if len(full) <= 15 else BRIDGE_HASH_PREFIX + _digest(network, 10)


def netns_name(pod: str) -> str:
    return NETNS_PREFIX + pod


def _veth_names(netns: str) -> tuple[str, str]:
    h = _digest(netns, 11)
    return "shv" + h, "shp" + h


# --- commands ------------------------------------------------------------------------------

def unavailable() -> str | None:
    """Why pods cannot be made here (not root, a tool missing), or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (apt-get install {package})"
    return None


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host command; a failure raises :class:`HostError` with the command's stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise HostError(f"`{argv[0]}` not found: {unavailable() or 'install it'}") from None
    except subprocess.TimeoutExpired:
        raise HostError(f"`{shlex.join(argv)}` did not finish within 60s") from None
    if check and done.returncode != 0:
        reason = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise HostError(f"`{shlex.join(argv)}` failed: {reason}")
    return done


def _ok(argv: Sequence[str]) -> bool:
    return run(argv, check=False).returncode == 0


def _json(argv: Sequence[str]) -> list[dict]:
    out = run(argv, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    return json.loads(out.stdout)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One creator at a time on this host (address allocation, idempotency checks)."""
    with open(_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ipv4_addrs(argv_prefix: Sequence[str], dev: str) -> list[ipaddress.IPv4Interface]:
    out: list[ipaddress.IPv4Interface] = []
    for link in _json([*argv_prefix, "-j", "-4", "addr", "show", "dev", dev]):
        for a in link.get("addr_info", []):
            out.append(ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
    return out


def _iptables(*args: str, table: str = "filter") -> list[str]:
    return ["iptables", "-w", "10", "-t", table, *args]


def _ensure_rule(chain: str, rule: Sequence[str], table: str = "filter") -> None:
    if not _ok(_iptables("-C", chain, *rule, table=table)):
        run(_iptables("-A", chain, *rule, table=table))


def _ensure_chains() -> None:
    # Each inserted first in its built-in chain: ISOLATE (inserted after FORWARD) ends up
    # first, so a drop between two networks wins over FORWARD's accepts.
    for table, chain, parent in _CHAINS:
        if not _ok(_iptables("-S", chain, table=table)):
            done = run(_iptables("-N", chain, table=table), check=False)
            if done.returncode != 0 and "exists" not in done.stderr:
                raise HostError(f"`iptables -t {table} -N {chain}` failed: "
                                f"{done.stderr.strip()}")
        if not _ok(_iptables("-C", parent, "-j", chain, table=table)):
            run(_iptables("-I", parent, "1", "-j", chain, table=table))


def _comment(*names: str) -> list[str]:
    return ["-m", "comment", "--comment", "shoal:" + ":".join(names)]


def _delete_rules(match: Callable[[list[str]], bool]) -> None:
    """Delete every rule of shoal's chains whose comment names satisfy ``match``."""
    for table, chain, _ in _CHAINS:
        listing = run(_iptables("-S", chain, table=table), check=False)
        for line in listing.stdout.splitlines():
            words = shlex.split(line)
            if not words or words[0] != "-A" or "--comment" not in words:
                continue
            comment = words[words.index("--comment") + 1]
            if comment.startswith("shoal:") and match(comment[len("shoal:"):].split(":")):
                run(_iptables("-D", *words[1:], table=table), check=False)


# --- networks ------------------------------------------------------------------------------

def create_network(name: str, subnet: str) -> Network:
    """The bridge for ``name`` with the first host of ``subnet`` as its address (idempotent)."""
    _check_name("network", name)
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as e:
        raise HostError(f"network {name}: subnet {subnet!r}: {e}") from None
    if net.prefixlen > 29:
        raise HostError(f"network {name}: subnet {subnet} is too small (at most /29)")
    network = Network(name, bridge_name(name), net, next(net.hosts()))
    gw = ipaddress.IPv4Interface(f"{network.gateway}/{net.prefixlen}")
    with _locked():
        if not _ok(["ip", "link", "show", "dev", network.bridge]):
            run(["ip", "link", "add", network.bridge, "type", "bridge"])
        run(["ip", "link", "set", "dev", network.bridge, "alias", f"shoal:network:{name}"])
        addrs = _ipv4_addrs(["ip"], network.bridge)
        others = [a for a in addrs if a != gw]
        if others:
            raise Conflict(
                f"network {name} already exists with address {others[0]}, not {gw}"
            )
        if not addrs:
            run(["ip", "addr", "add", str(gw), "dev", network.bridge])
        run(["ip", "link", "set", "dev", network.bridge, "up"])
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        _ensure_chains()
        for direction in ("-i", "-o"):
            _ensure_rule(FORWARD_CHAIN,
                         [direction, network.bridge, *_comment(name), "-j", "ACCEPT"])
        # beyond the host (a resolver, an external API): the host's address as source, as
        # the outside has no route to the pods' subnet. Not toward any shoal bridge: pods
        # keep seeing each other's own addresses.
        for bridges in (NETNS_PREFIX + "+", BRIDGE_HASH_PREFIX + "+"):
            _ensure_rule(NAT_CHAIN, ["-o", bridges, "-j", "RETURN"], table="nat")
        _ensure_rule(NAT_CHAIN, ["-s", str(net), *_comment(name), "-j", "MASQUERADE"],
                     table="nat")
    return network


def delete_network(network: Network) -> None:
    """Remove the bridge and its forwarding/isolation rules (idempotent)."""
    with _locked():
        _delete_rules(lambda names: network.name in names)
        if _ok(["ip", "link", "show", "dev", network.bridge]):
            run(["ip", "link", "del", "dev", network.bridge])


def isolate(a: Network, b: Network) -> None:
    """Pods of ``a`` and ``b`` cannot reach each other; both still reach host addresses."""
    with _locked():
        _ensure_chains()
        for x, y in ((a, b), (b, a)):
            _ensure_rule(ISOLATE_CHAIN, ["-i", x.bridge, "-o", y.bridge,
                                         *_comment(x.name, y.name), "-j", "DROP"])


# --- pods ----------------------------------------------------------------------------------

def _netns_exists(netns: str) -> bool:
    return (Path("/run/netns") / netns).exists() or any(
        n.get("name") == netns for n in _json(["ip", "-j", "netns", "list"])
    )


def _used_addresses(network: Network) -> set[ipaddress.IPv4Address]:
    used = {network.gateway}
    for ns in _json(["ip", "-j", "netns", "list"]):
        name = ns.get("name", "")
        if name.startswith(NETNS_PREFIX):
            for a in _ipv4_addrs(["ip", "-n", name], "eth0"):
                if a.ip in network.subnet:
                    used.add(a.ip)
    return used


def _pick_address(network: Network, address: str | None) -> ipaddress.IPv4Address:
    used = _used_addresses(network)
    if address is not None:
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError as e:
            raise HostError(f"pod address {address!r}: {e}") from None
        if ip not in network.subnet or ip in (network.subnet.network_address,
                                              network.subnet.broadcast_address):
            raise HostError(f"pod address {ip} is not a host of {network.subnet}")
        if ip in used:
            raise Conflict(f"address {ip} is already used on network {network.name}")
        return ip
    for ip in network.subnet.hosts():
        if ip not in used:
            return ip
    raise HostError(f"network {network.name}: no free address left in {network.subnet}")


def create_pod(name: str, network: Network, address: str | None = None) -> Pod:
    """A network namespace on ``network``; ``address`` None = the next free one.

    Asking again for an existing pod returns it when it is on the same network (and has
    the asked address); otherwise :class:`Conflict`.
    """
    _check_name("pod", name)
    netns = netns_name(name)
    host_if, pod_if = _veth_names(netns)
    with _locked():
        if _netns_exists(netns):
            existing = [a.ip for a in _ipv4_addrs(["ip", "-n", netns], "eth0")]
            for ip in existing:
                if ip in network.subnet and (address is None or str(ip) == address):
                    return Pod(name, netns, network, ip)
            raise Conflict(f"pod {name} already exists with addresses {existing or 'none'}")
        ip = _pick_address(network, address)
        pod = Pod(name, netns, network, ip)
        try:
            run(["ip", "netns", "add", netns])
            run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", pod_if,
                 "netns", netns])
            run(["ip", "link", "set", "dev", host_if, "alias", f"shoal:pod:{name}"])
            run(["ip", "link", "set", "dev", host_if, "master", network.bridge, "up"])
            inside = ["ip", "-n", netns]
            run([*inside, "link", "set", "dev", pod_if, "name", "eth0"])
            run([*inside, "addr", "add", f"{ip}/{network.subnet.prefixlen}", "dev", "eth0"])
            run([*inside, "link", "set", "dev", "eth0", "up"])
            run([*inside, "link", "set", "dev", "lo", "up"])
            run([*inside, "route", "add", "default", "via", str(network.gateway)])
        except BaseException:
            _delete_pod(netns)
            raise
    return pod


def find_network(name: str) -> Network | None:
    """The network ``name`` if its bridge exists (its subnet read from the bridge)."""
    _check_name("network", name)
    bridge = bridge_name(name)
    for a in _ipv4_addrs(["ip"], bridge):
        return Network(name, bridge, a.network, a.ip)
    return None


def write_etc(pod: Pod, *, search: Sequence[str] = (), nameserver: str = "127.0.0.1") -> None:
    """The pod's /etc/hosts and /etc/resolv.conf (``ip netns exec`` mounts them over /etc).

    In capture mode DNS queries are answered by the sidecar whatever the nameserver;
    ``search`` makes short service names work with any resolver."""
    pod.etc_dir.mkdir(parents=True, exist_ok=True)
    (pod.etc_dir / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{pod.address}\t{pod.name}\n")
    lines = [f"nameserver {nameserver}"] + ([f"search {' '.join(search)}"] if search else [])
    (pod.etc_dir / "resolv.conf").write_text("\n".join(lines) + "\n")


def _delete_pod(netns: str) -> None:
    host_if, _ = _veth_names(netns)
    if _netns_exists(netns):
        run(["ip", "netns", "del", netns])
    if _ok(["ip", "link", "show", "dev", host_if]):
        run(["ip", "link", "del", "dev", host_if], check=False)
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)


def delete_pod(pod: Pod) -> None:
    """Remove the namespace, its veth pair and its /etc/netns files (idempotent)."""
    with _locked():
        _delete_pod(pod.netns)


# --- cleanup -------------------------------------------------------------------------------

def cleanup(prefix: str) -> None:
    """Remove every pod, network and rule whose shoal name starts with ``prefix``."""
    if not prefix:
        raise HostError("cleanup needs a non-empty prefix")
    with _locked():
        for ns in _json(["ip", "-j", "netns", "list"]):
            name = ns.get("name", "")
            if name.startswith(NETNS_PREFIX + prefix):
                _delete_pod(name)
        _delete_rules(lambda names: any(n.startswith(prefix) for n in names))
        for link in _json(["ip", "-j", "-d", "link", "show"]):
            alias = link.get("ifalias", "")
            kind, _, name = alias.removeprefix("shoal:").partition(":")
            if alias.startswith("shoal:") and kind in ("pod", "network") and \
                    name.startswith(prefix):
                run(["ip", "link", "del", "dev", link["ifname"]], check=False)
