"""Data-plane benchmark: direct vs shoal sidecars vs hand-written Envoy pairs, plus
ablations on static replicas of shoal's sidecars.

One nginx (the shoal server workload's app) is the backend of every path:

* ``direct``        load generator -> nginx
* ``shoal``         load generator -> client sidecar (outbound, ``Host: bench-server:8080``)
                    -> mTLS -> server sidecar (inbound) -> nginx; real control plane and
                    agents with shoal's defaults: per-edge metrics from Envoy's own
                    counters (stats access logger, read by the agents once a second), a
                    JSON access log on each Envoy's stdout, Zipkin tracing at 1 %, no
                    access-log stream to the control plane
* ``shoal + log stream`` the same with a second control plane started with
                    ``--access-log-stream`` (every request's access log streamed to the
                    control plane over OTLP, the design before issue 12), its own sidecars
                    and nginx
* ``hand-written``  load generator -> client Envoy -> server Envoy -> nginx (static
                    bootstraps, plaintext between the Envoys)
* ``hand-written mTLS`` the same pair with mTLS between the Envoys (bench/certs.py)
* ``replica <variant>`` (ablations, ``--no-ablation`` skips them) two static Envoys built
                    from the sidecars' own bootstrap + config dump, with one feature
                    switched off (bench/replica.py)

Each round measures every path (order rotates per round): latency at a fixed rate with
h2load, then max throughput with wrk (main paths only). CPU per request is counted for
the path's Envoys and, separately, for the control plane + agents (telemetry ingest).
The report takes the median over rounds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import certs, tools
from bench.configdiff import compare_configs, counter
from bench.envoy_pair import EnvoyPair
from bench.machine import proc_stat
from bench.replica import VARIANTS, ReplicaPair, Sidecar
from bench.stats import median
from shoal.testing.local import AgentProcess, ControlPlaneProcess, free_port, wait_for

SERVICE = "bench-server"
SERVICE_PORT = 8080
HOST = f"{SERVICE}:{SERVICE_PORT}"
PLAIN = "hand-written"
MTLS = "hand-written mTLS"
STREAM = "shoal + log stream"
TRACED = "shoal + tracing 1%"
# Live meshes with one opt-in feature switched on, for the record: path -> (control-plane
# arguments, what it is). Each gets its own control plane, agents and nginx.
OPT_INS: dict[str, tuple[list[str], str]] = {
    STREAM: (["--access-log-stream"], "The per-request access-log stream (`--access-log-stream`)"),
    TRACED: (["--trace-sampling", "1"], "Tracing at 1 % (`--trace-sampling 1`)"),
}
PATHS = ("direct", "shoal", *OPT_INS, PLAIN, MTLS)
REPLICA = "replica "  # + variant
OUTBOUND_CLUSTER = f"outbound|{SERVICE_PORT}||{SERVICE}.default.svc.cluster.local"
SERVICE_YAML = f"""
apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {{name: {SERVICE}, namespace: default}}
spec:
  selector: {{app: {SERVICE}}}
  ports: [{{name: http, port: {SERVICE_PORT}, protocol: http}}]
"""


@dataclass(frozen=True)
class Options:
    rounds: int = 5
    rate: int = 1000
    connections: int = 4
    seconds: int = 10
    warmup: int = 2
    wrk_connections: int = 16
    wrk_seconds: int = 5
    ablation: bool = True  # also measure the static replicas of shoal's sidecars
    variants: tuple[str, ...] = tuple(VARIANTS)


@dataclass
class Target:
    name: str
    port: int
    host: str | None
    envoy_pids: list[int] = field(default_factory=list)
    throughput: bool = True  # also run wrk
    mesh_pids: list[int] | None = None  # its control plane + agents (None: the main mesh)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@dataclass(frozen=True)
class Sample:
    latency: tools.Latency
    throughput: tools.Throughput | None
    envoy_cpu_us_per_req: float  # both Envoys, during the fixed-rate run
    mesh_cpu_us_per_req: float  # control plane + both agents, same window


@dataclass
class Result:
    options: Options
    samples: dict[str, list[Sample]]
    config_findings: list[str]
    connections: dict[str, tuple[int, int]] = field(default_factory=dict)  # cx, requests

    @property
    def paths(self) -> list[str]:
        return list(self.samples)

    @property
    def replicas(self) -> list[str]:
        return [p for p in self.samples if p.startswith(REPLICA)]

    def diffs_us(self, path: str, base: str, metric: str = "p50_ms") -> list[float]:
        """Per round: path - base, in µs (a latency percentile or a CPU metric)."""
        return [(self._value(a, metric) - self._value(b, metric)) * (1000 if "ms" in metric
                                                                     else 1)
                for a, b in zip(self.samples[path], self.samples[base], strict=True)]

    def added_ratios(self, path: str = "shoal", base: str = MTLS) -> list[float]:
        """Per round: (path p50 - direct p50) / (base p50 - direct p50)."""
        out = []
        for d, a, b in zip(self.samples["direct"], self.samples[path], self.samples[base],
                           strict=True):
            denom = b.latency.p50_ms - d.latency.p50_ms
            out.append((a.latency.p50_ms - d.latency.p50_ms) / denom if denom > 0
                       else float("nan"))
        return out

    @staticmethod
    def _value(s: Sample, metric: str) -> float:
        if metric == "rps":
            return s.throughput.rps if s.throughput else float("nan")
        if metric == "cpu":
            return s.envoy_cpu_us_per_req
        if metric == "mesh_cpu":
            return s.mesh_cpu_us_per_req
        return float(getattr(s.latency, metric))

    def med(self, path: str, metric: str) -> float:
        return median([self._value(s, metric) for s in self.samples[path]])


def _mesh(cp: ControlPlaneProcess, nginx_dir: Path, app_port: int
          ) -> tuple[AgentProcess, AgentProcess]:
    """The bench service on ``cp``: a server sidecar in front of an nginx on ``app_port``
    and an idle client whose sidecar the load generator uses."""
    with cp.client() as c:
        c.apply(SERVICE_YAML, source="bench")
    server = AgentProcess(cp, service=SERVICE, port=SERVICE_PORT, app_port=app_port,
                          name="bench-server-0",
                          command=tools.nginx_command(nginx_dir, app_port))
    idle_port = free_port()
    client = AgentProcess(cp, service="bench-client", port=8081, app_port=idle_port,
                          name="bench-client-0",
                          command=[sys.executable, "-m", "http.server", "--bind",
                                   "127.0.0.1", str(idle_port)])
    return server, client


def _agent_json(cp: ControlPlaneProcess, agent: AgentProcess) -> dict:
    path = cp.workdir / "run" / agent.name / "agent.json"
    return wait_for(lambda: json.loads(path.read_text()), 60, f"{path}")


def _envoy_pid(cp: ControlPlaneProcess, agent: AgentProcess) -> int:
    path = cp.workdir / "run" / agent.name / "envoy.pid"
    return wait_for(lambda: int(path.read_text()), 60, f"{path}")


def _wait_ok(target: Target) -> None:
    headers = {"Host": target.host} if target.host else {}

    def ok() -> bool:
        r = httpx.get(target.url, headers=headers, timeout=2, trust_env=False)
        return r.status_code == 200 and r.content == tools.BODY

    wait_for(ok, 60, f"{target.name} to answer 200 with the body")


def _cpu(pids: list[int]) -> float:
    return sum(proc_stat(p).cpu_s for p in pids)


def settle(pids: list[int], *, idle_cores: float = 0.05, window: float = 0.5,
           limit: float = 30.0) -> float:
    """Wait until ``pids`` use less than ``idle_cores`` (the control plane has ingested the
    telemetry a run produced); seconds waited."""
    t0 = time.monotonic()
    last = _cpu(pids)
    while time.monotonic() - t0 < limit:
        time.sleep(window)
        now = _cpu(pids)
        if (now - last) / window < idle_cores:
            break
        last = now
    return time.monotonic() - t0


def _measure(target: Target, opts: Options, workdir: Path, mesh_pids: list[int]) -> Sample:
    mesh_pids = target.mesh_pids if target.mesh_pids is not None else mesh_pids
    settle(mesh_pids)
    before, mesh_before = _cpu(target.envoy_pids), _cpu(mesh_pids)
    t0 = time.monotonic()
    log_name = target.name.replace(" ", "_").replace("%", "pct")
    lat = tools.fixed_rate(target.url, target.host, rate=opts.rate,
                           connections=opts.connections, seconds=opts.seconds,
                           warmup=opts.warmup, log_file=workdir / f"h2load-{log_name}.log")
    cpu = _cpu(target.envoy_pids) - before
    elapsed = time.monotonic() - t0
    settle(mesh_pids)  # the ingest tail belongs to this run
    mesh_cpu = _cpu(mesh_pids) - mesh_before
    # requests during warm-up count too for CPU: estimate them from the achieved rate
    total_reqs = max(1.0, lat.rate * elapsed)
    thr = (tools.max_throughput(target.url, target.host, connections=opts.wrk_connections,
                                seconds=opts.wrk_seconds) if target.throughput else None)
    return Sample(lat, thr, cpu / total_reqs * 1e6 if target.envoy_pids else 0.0,
                  mesh_cpu / total_reqs * 1e6)


def run(opts: Options, log: Callable[[str], None] = print) -> Result:
    tools.ensure_tools()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-dp-") as tmp:
        workdir = Path(tmp)
        cp = ControlPlaneProcess(workdir / "shoal").start()
        cps = {name: ControlPlaneProcess(workdir / f"opt-in-{i}", extra=args).start()
               for i, (name, (args, _)) in enumerate(OPT_INS.items())}
        agents: list[AgentProcess] = []
        opt_in_agents: dict[str, list[AgentProcess]] = {}
        pairs: list[EnvoyPair | ReplicaPair] = []
        try:
            app_port = free_port()
            server, client = _mesh(cp, workdir / "nginx", app_port)
            agents = [server.start(), client.start()]
            for i, (name, other) in enumerate(cps.items()):
                o_server, o_client = _mesh(other, workdir / f"nginx-opt-in-{i}", free_port())
                opt_in_agents[name] = [o_server.start(), o_client.start()]
            for c in (cp, *cps.values()):
                c.wait_synced({server.name, client.name}, timeout=90)
            info = {a.name: _agent_json(cp, a) for a in agents}
            outbound = int(info[client.name]["outboundPort"])
            shoal_pids = [_envoy_pid(cp, client), _envoy_pid(cp, server)]
            mesh_pids = [cp.pid, *(a.pid for a in agents)]
            plain = EnvoyPair(workdir, app_port, label="plain")
            mtls = EnvoyPair(workdir, app_port, certs=certs.make(workdir / "certs"),
                             label="mtls")
            pairs += [plain, mtls]
            targets = [
                Target("direct", app_port, None),
                Target("shoal", outbound, HOST, shoal_pids),
                *(Target(name, int(_agent_json(cps[name], o_client)["outboundPort"]), HOST,
                         [_envoy_pid(cps[name], o_client), _envoy_pid(cps[name], o_server)],
                         mesh_pids=[cps[name].pid, *(a.pid for a in (o_server, o_client))])
                  for name, (o_server, o_client) in opt_in_agents.items()),
                Target(PLAIN, plain.port, HOST, plain.pids),
                Target(MTLS, mtls.port, HOST, mtls.pids),
            ]
            if opts.ablation:
                # the sidecars' config once they have served a request (all resources warm)
                _wait_ok(targets[1])
                sidecars = {name: Sidecar(cp.workdir / "run" / name, int(j["adminPort"]),
                                          int(j["inboundPort"])) for name, j in info.items()}
                for v in opts.variants:
                    rp = ReplicaPair(workdir, v, sidecars[client.name], sidecars[server.name])
                    pairs.append(rp)
            for p in pairs:
                p.start()
            first_pair = 2 + len(OPT_INS)  # direct, shoal, the opt-ins, then the pairs
            for p, t in zip(pairs, targets[first_pair:first_pair + 2], strict=False):
                t.envoy_pids = p.pids
            for p in pairs[2:]:
                assert isinstance(p, ReplicaPair)
                targets.append(Target(REPLICA + p.variant, p.port, HOST, p.pids,
                                      throughput=False))
            for t in targets:
                _wait_ok(t)
            log(f"ready: nginx :{app_port}, shoal outbound :{outbound}, pairs "
                + ", ".join(f"{t.name} :{t.port}" for t in targets[first_pair:]))
            samples: dict[str, list[Sample]] = {t.name: [] for t in targets}
            for r in range(opts.rounds):
                n = r % len(targets)
                order = targets[n:] + targets[:n]
                for t in order:
                    s = _measure(t, opts, workdir, mesh_pids)
                    samples[t.name].append(s)
                    wrk = f"wrk {s.throughput.rps:,.0f} req/s | " if s.throughput else ""
                    log(f"round {r + 1} {t.name:>17}: p50 {s.latency.p50_ms:.3f} ms "
                        f"p99 {s.latency.p99_ms:.3f} ms ({s.latency.requests} req, "
                        f"{s.latency.errors} err) | {wrk}Envoy CPU "
                        f"{s.envoy_cpu_us_per_req:.0f} us/req, CP+agents "
                        f"{s.mesh_cpu_us_per_req:.0f} us/req")
            shoal_admin = [int(info[a.name]["adminPort"]) for a in (client, server)]
            findings = compare_configs(shoal_admin, list(mtls.admin_ports))
            conns = {
                "shoal": (counter(shoal_admin[0], f"cluster.{OUTBOUND_CLUSTER}.upstream_cx_total"),
                          counter(shoal_admin[0], f"cluster.{OUTBOUND_CLUSTER}.upstream_rq_total")),
                MTLS: (counter(mtls.admin_ports[0], "cluster.server.upstream_cx_total"),
                       counter(mtls.admin_ports[0], "cluster.server.upstream_rq_total")),
            }
            return Result(opts, samples, findings, conns)
        finally:
            for p in pairs:
                p.stop()
            for a in reversed(agents + [x for xs in opt_in_agents.values() for x in xs]):
                a.stop()
            for c in (cp, *cps.values()):
                c.stop()
