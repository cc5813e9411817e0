"""What the agent is asked to do (:class:`AgentConfig`) and what it decided (:class:`Plan`).

Everything here is pure: port picking and randomness are injected, so the plan for a
given config is reproducible in tests.
"""

from __future__ import annotations

import random
import re
import string
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from shoal.api.mesh import check_labels
from shoal.api.meta import DNS_LABEL, DNS_SUBDOMAIN
from shoal.ca.spiffe import SpiffeId
from shoal.errors import AgentError, ValidationError
from shoal.hosts.sandbox import AppUser, check_app_user
from shoal.xds.node import APP_SOCKET_MAX, dns_upstream
from shoal.xds.types import Upstream

# Where a DestinationRule's clientCertificate/privateKey may be read from unless
# `--tls-key-dir` says otherwise (the directory the docs' examples use).
DEFAULT_TLS_KEY_DIRS = (Path("/etc/shoal/certs"),)

PROTOCOLS = ("http", "http2", "grpc", "tcp", "tls", "https")
DEFAULT_CONTROL_PLANE = "http://127.0.0.1:15080"
DEFAULT_XDS = "127.0.0.1:15010"


@dataclass(frozen=True)
class UpstreamSpec:
    """``--upstream HOST:PORT[=LOCALPORT]``; ``local_port`` None means "pick a free one"."""

    host: str
    port: int
    local_port: int | None = None


@dataclass(frozen=True)
class AgentConfig:
    service: str
    port: int
    command: tuple[str, ...]
    namespace: str = "default"
    protocol: str = "http"
    port_name: str = "http"
    labels: Mapping[str, str] = field(default_factory=dict)
    app_port: int | None = None  # default: port
    inbound_port: int | None = None  # default: a free port
    address: str = "127.0.0.1"
    name: str | None = None  # workload name; default <service>-<5 random>
    service_account: str | None = None  # default: service
    locality: str = ""  # region/zone/subzone
    upstreams: tuple[UpstreamSpec, ...] = ()
    control_plane: str = DEFAULT_CONTROL_PLANE
    xds: str = DEFAULT_XDS
    xds_delta: bool = True  # incremental xDS (ADR 0037); False: state-of-the-world
    drain_seconds: float = 5.0
    run_dir: Path | None = None
    lease_seconds: int = 15
    ready_timeout: float = 30.0  # wait this long for Envoy LIVE, then start the app anyway
    app_start_timeout: float = 60.0  # wait this long for the app to listen, then register anyway
    stop_grace: float = 10.0  # SIGTERM -> SIGKILL for the app
    envoy_log_level: str = "warning"
    # identity (docs/adr/0007-workload-identity.md)
    token: str | None = None  # literal token (--token / $SHOAL_TOKEN)
    token_file: Path | None = None  # read on each use, so it can be replaced
    ca_bundle: Path | None = None  # mesh roots: verify the control plane (REST + xDS TLS)
    renew_fraction: float = 0.5  # renew the certificate at this fraction of its lifetime
    # where a DestinationRule's clientCertificate/privateKey may be read from
    tls_key_dirs: tuple[Path, ...] = DEFAULT_TLS_KEY_DIRS
    # transparent capture in a pod (docs/hosts.md): iptables sends the app's TCP through the
    # sidecar, which runs as proxy_uid; the app gets no proxy settings
    capture: bool = False
    proxy_uid: int = 1337
    # with capture: the resolvers (IPv4:PORT) for names outside the mesh, asked by the
    # sidecar's DNS listener and by Envoy itself (DNS ServiceEntries)
    dns_upstreams: tuple[str, ...] = ()
    # with capture: the app's user (None: nobody) and further paths hidden from it
    # (docs/adr/0024-pod-app-sandbox.md)
    app_user: AppUser | None = None
    app_hide: tuple[Path, ...] = ()
    # without capture: the app listens on a Unix socket in a private directory of the run
    # dir instead of a loopback port (docs/adr/0026-app-unix-socket.md)
    app_socket: bool = False
    # the metrics endpoint Prometheus scrapes (shoal.agent.metrics): None picks a free
    # port, 0 turns it off; only the scraper's SPIFFE ID may read it (None: the default,
    # spiffe://<trust domain>/ns/<root namespace>/sa/prometheus)
    metrics_port: int | None = None
    metrics_scraper: str | None = None


@dataclass(frozen=True)
class Plan:
    """The concrete ports, names and paths of one agent run."""

    workload: str
    admin_port: int
    outbound_port: int
    inbound_port: int
    app_port: int
    upstreams: tuple[Upstream, ...]
    xds_host: str
    xds_port: int
    run_dir: Path
    more_xds: tuple[tuple[str, int], ...] = ()  # further control-plane instances (HA)
    # capture mode: where Envoy (another uid) finds its bootstrap and SDS socket and writes
    # its admin address; None = run_dir
    proxy_dir: Path | None = None
    # --app-socket: the Unix socket the app listens on (in a 0700 directory); None = the
    # app listens on 127.0.0.1:app_port
    app_socket: Path | None = None
    # the metrics endpoint's port on the workload's address; 0 = none
    metrics_port: int = 0

    @property
    def envoy_dir(self) -> Path:
        return self.proxy_dir or self.run_dir

    @property
    def bootstrap_path(self) -> Path:
        return self.envoy_dir / "envoy-bootstrap.json"


def parse_upstream(text: str) -> UpstreamSpec:
    """``HOST:PORT`` or ``HOST:PORT=LOCALPORT``."""
    target, _, local = text.partition("=")
    host, sep, port = target.rpartition(":")
    try:
        if not sep or not host:
            raise ValueError
        spec = UpstreamSpec(host, int(port), int(local) if local else None)
    except ValueError:
        raise AgentError(f"--upstream {text!r}: expected HOST:PORT[=LOCALPORT]") from None
    if not 0 < spec.port < 65536 or not 0 <= (spec.local_port or 0) < 65536:
        raise AgentError(f"--upstream {text!r}: port out of range")
    return spec


def parse_labels(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``k=v`` items into a dict; later items win."""
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        try:
            if not sep:
                raise ValueError("expected KEY=VALUE")
            check_labels({k: v})
        except ValueError as e:
            raise AgentError(f"--label {item!r}: {e}") from None
        out[k] = v
    return out


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AgentError(f"{what} {text!r}: expected HOST:PORT")
    return host, int(port)


def parse_metrics_port(text: str | None) -> int | None:
    """``--metrics-port``: a port, ``0``/``off`` (no endpoint), or None (pick one)."""
    if text is None:
        return None
    if text.strip().lower() == "off":
        return 0
    try:
        port = int(text)
    except ValueError:
        raise AgentError(f"--metrics-port {text!r}: expected a port, 0 or off") from None
    if not 0 <= port < 65536:
        raise AgentError(f"--metrics-port {text!r}: out of range 0-65535")
    return port


def parse_dns_upstream(text: str) -> str:
    """``IP`` or ``IP:PORT`` (IPv4; port 53 by default) -> ``IP:PORT``."""
    try:
        return dns_upstream(text, default_port=53)
    except ValueError as e:
        raise AgentError(f"--dns-upstream {text!r}: expected an IPv4 address[:PORT] "
                         f"({e})") from None


def parse_xds_list(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]`` (several control-plane instances) -> addresses."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise AgentError(f"--xds {text!r}: expected HOST:PORT[,HOST:PORT...]")
    return [parse_host_port(t, "--xds") for t in items]


def control_plane_urls(text: str) -> list[str]:
    """``URL[,URL...]`` (several control-plane instances) -> base URLs, in order."""
    return [u.strip().rstrip("/") for u in text.split(",") if u.strip()]


def validate(config: AgentConfig) -> None:
    """Reject what the control plane would reject anyway, with one line naming the flag."""
    problems: list[str] = []
    if not DNS_LABEL.match(config.service) or len(config.service) > 63:
        problems.append(f"--service {config.service!r}: must be a lowercase DNS-1123 label")
    if not DNS_LABEL.match(config.namespace) or len(config.namespace) > 63:
        problems.append(f"--namespace {config.namespace!r}: must be a lowercase DNS-1123 label")
    if config.name is not None and not DNS_SUBDOMAIN.match(config.name):
        problems.append(f"--name {config.name!r}: must be a lowercase DNS-1123 name")
    if config.protocol not in PROTOCOLS:
        problems.append(f"--protocol {config.protocol!r}: one of {', '.join(PROTOCOLS)}")
    if not DNS_LABEL.match(config.port_name):
        problems.append(f"--port-name {config.port_name!r}: must be a lowercase DNS-1123 label")
    for flag, value in (("--port", config.port), ("--app-port", config.app_port),
                        ("--inbound-port", config.inbound_port)):
        if value is not None and not 0 < value < 65536:
            problems.append(f"{flag} {value}: out of range 1-65535")
    if config.locality and len(config.locality.split("/")) > 3:
        problems.append(f"--locality {config.locality!r}: expected REGION[/ZONE[/SUBZONE]]")
    if not control_plane_urls(config.control_plane):
        problems.append(f"--control-plane {config.control_plane!r}: expected URL[,URL...]")
    if not config.command:
        problems.append("no application command given (shoal run ... -- CMD ARGS...)")
    if not 0.05 <= config.renew_fraction <= 0.95:
        problems.append("--renew-fraction must be within 0.05..0.95")
    if config.ca_bundle is not None and not config.ca_bundle.is_file():
        problems.append(f"--ca-bundle {config.ca_bundle}: no such file")
    if config.token_file is not None and not config.token_file.is_file():
        problems.append(f"--token-file {config.token_file}: no such file")
    if config.drain_seconds < 0:
        problems.append("--drain-seconds must not be negative")
    if config.metrics_port is not None and not 0 <= config.metrics_port < 65536:
        problems.append(f"--metrics-port {config.metrics_port}: out of range 0-65535")
    if config.metrics_scraper is not None and not _is_spiffe_id(config.metrics_scraper):
        problems.append(f"--metrics-scraper {config.metrics_scraper!r}: expected a SPIFFE "
                        "ID spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT")
    if config.capture:
        if config.upstreams:
            problems.append("--upstream is not used with --capture (the app dials services "
                            "by name)")
        if config.address in ("127.0.0.1", "localhost", "0.0.0.0"):
            problems.append("--capture needs --address: the pod's own IP address")
        if config.inbound_port is not None:
            problems.append("--inbound-port is not used with --capture (peers dial the app's "
                            "port)")
        if config.app_user is not None:
            try:
                check_app_user(config.app_user, proxy_uid=config.proxy_uid)
            except AgentError as e:
                problems.append(str(e))
        problems += [f"--app-hide {p}: expected an absolute path other than /"
                     for p in config.app_hide if not p.is_absolute() or p == Path("/")]
        if config.app_socket:
            problems.append("--app-socket is for unprivileged mode: in a pod (--pod / "
                            "--capture) the app's port is already reached only through "
                            "its sidecar")
    else:
        if config.dns_upstreams:
            problems.append("--dns-upstream is for pods (--pod / --capture): without capture "
                            "the app uses the host's resolver")
        if config.app_user is not None or config.app_hide:
            problems.append("--app-user / --app-hide are for pods (--pod / --capture): "
                            "without capture the app runs as the agent's user")
    if problems:
        raise AgentError("; ".join(problems))


def _is_spiffe_id(text: str) -> bool:
    try:
        SpiffeId.parse(text)
    except ValidationError:
        return False
    return True


def random_suffix(rng: random.Random | None = None, n: int = 5) -> str:
    rng = rng or random.SystemRandom()
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def make_plan(
    config: AgentConfig,
    *,
    pick_port: Callable[[], int],
    suffix: Callable[[], str] = random_suffix,
) -> Plan:
    """Choose the workload name, every port and the run directory for ``config``."""
    validate(config)
    workload = config.name or f"{config.service}-{suffix()}"
    (xds_host, xds_port), *more_xds = parse_xds_list(config.xds)
    upstreams = tuple(
        Upstream(u.host, u.port, u.local_port or pick_port()) for u in config.upstreams
    )
    run_dir = config.run_dir or Path(tempfile.gettempdir()) / "shoal-run" / (
        f"{config.namespace}.{workload}"
    )
    app_port = config.app_port or config.port
    app_socket = app_socket_path(Path(run_dir)) if config.app_socket else None
    if config.capture:  # peers dial pod-IP:app-port; iptables hands it to the sidecar
        return Plan(
            workload=workload, admin_port=pick_port(), outbound_port=0, inbound_port=app_port,
            app_port=app_port, upstreams=(), xds_host=xds_host, xds_port=xds_port,
            run_dir=Path(run_dir), more_xds=tuple(more_xds),
            proxy_dir=Path(tempfile.gettempdir()) / "shoal-proxy" / (
                f"{config.namespace}.{workload}"),
            metrics_port=_metrics_port(config, pick_port),  # last: keeps the others' order
        )
    return Plan(
        workload=workload,
        admin_port=pick_port(),
        outbound_port=pick_port(),
        inbound_port=config.inbound_port or pick_port(),
        app_port=app_port,
        upstreams=upstreams,
        xds_host=xds_host,
        xds_port=xds_port,
        run_dir=Path(run_dir),
        more_xds=tuple(more_xds),
        app_socket=app_socket,
        metrics_port=_metrics_port(config, pick_port),  # picked last (arguments run in order)
    )


def _metrics_port(config: AgentConfig, pick_port: Callable[[], int]) -> int:
    return pick_port() if config.metrics_port is None else config.metrics_port


def app_socket_path(run_dir: Path) -> Path:
    """``<run dir>/app/app.sock`` as an absolute path short enough for ``sun_path``."""
    path = run_dir.absolute() / "app" / "app.sock"
    if len(bytes(path)) > APP_SOCKET_MAX:
        raise AgentError(f"--app-socket: {path} is longer than {APP_SOCKET_MAX} bytes (the "
                         "limit of a Unix socket path); choose a shorter --run-dir")
    return path


def upstream_env_name(host: str, port: int) -> str:
    """``SHOAL_UPSTREAM_<HOST>_<PORT>``: HOST upper-cased, non-alphanumerics as ``_``."""
    return f"SHOAL_UPSTREAM_{re.sub(r'[^A-Z0-9]', '_', host.upper())}_{port}"


def app_env(config: AgentConfig, plan: Plan, base: Mapping[str, str]) -> dict[str, str]:
    """The application's environment: ``base`` plus the proxy, port and identity variables
    (no proxy variables in capture mode: the app needs none). With ``--app-socket`` the
    app gets ``SHOAL_APP_SOCKET`` and no ``PORT``/``SHOAL_APP_PORT`` at all (not even
    inherited ones): it has no TCP port to listen on."""
    if plan.app_socket is not None:
        rest = {k: v for k, v in base.items() if k not in ("PORT", "SHOAL_APP_PORT")}
        env = app_env(config, replace(plan, app_socket=None), rest)
        del env["PORT"], env["SHOAL_APP_PORT"]
        env["SHOAL_APP_SOCKET"] = str(plan.app_socket)
        return env
    env = dict(base)
    names = dict(PORT=str(plan.app_port), SHOAL_APP_PORT=str(plan.app_port),
                 SHOAL_SERVICE=config.service, SHOAL_WORKLOAD=plan.workload,
                 SHOAL_NAMESPACE=config.namespace)
    if config.capture:
        for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                  "all_proxy", "NO_PROXY", "no_proxy"):
            env.pop(k, None)
        env.update(names)
        return env
    proxy = f"http://127.0.0.1:{plan.outbound_port}"
    env.update(
        HTTP_PROXY=proxy,
        http_proxy=proxy,
        NO_PROXY="localhost,127.0.0.1",
        no_proxy="localhost,127.0.0.1",
        PORT=str(plan.app_port),
        SHOAL_APP_PORT=str(plan.app_port),
        SHOAL_SERVICE=config.service,
        SHOAL_WORKLOAD=plan.workload,
        SHOAL_NAMESPACE=config.namespace,
        SHOAL_OUTBOUND_PROXY=proxy,
    )
    for u in plan.upstreams:
        env[upstream_env_name(u.host, u.port)] = f"127.0.0.1:{u.local_port}"
    return env
