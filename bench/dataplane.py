"""Data-plane benchmark: direct vs shoal sidecars vs a hand-written Envoy pair.

One nginx (the shoal server workload's app) is the backend of all three paths:

* ``direct``     load generator -> nginx
* ``shoal``      load generator -> client sidecar (outbound, ``Host: bench-server:8080``)
                 -> server sidecar (inbound) -> nginx; real control plane and agents
* ``hand-written`` load generator -> client Envoy -> server Envoy -> nginx (static bootstraps)

Each round measures every path (order rotates per round): latency at a fixed rate with
h2load, then max throughput with wrk. The report takes the median over rounds.
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

from bench import tools
from bench.configdiff import compare_configs
from bench.envoy_pair import EnvoyPair
from bench.machine import proc_stat
from bench.stats import median
from shoal.testing.local import AgentProcess, ControlPlaneProcess, free_port, wait_for

SERVICE = "bench-server"
SERVICE_PORT = 8080
HOST = f"{SERVICE}:{SERVICE_PORT}"
PATHS = ("direct", "shoal", "hand-written")
ABLATION = "hand-written+shoal-route"
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
    ablation: bool = True  # also measure the pair with shoal's route/cluster extras


@dataclass
class Target:
    name: str
    port: int
    host: str | None
    envoy_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@dataclass(frozen=True)
class Sample:
    latency: tools.Latency
    throughput: tools.Throughput
    envoy_cpu_us_per_req: float  # both Envoys, during the fixed-rate run


@dataclass
class Result:
    options: Options
    samples: dict[str, list[Sample]]
    config_findings: list[str]

    @property
    def paths(self) -> list[str]:
        return [p for p in (*PATHS, ABLATION) if p in self.samples]

    def added_ratios(self, path: str = "shoal", base: str = "hand-written") -> list[float]:
        """Per round: (path p50 - direct p50) / (base p50 - direct p50)."""
        out = []
        for d, a, b in zip(self.samples["direct"], self.samples[path], self.samples[base],
                           strict=True):
            denom = b.latency.p50_ms - d.latency.p50_ms
            out.append((a.latency.p50_ms - d.latency.p50_ms) / denom if denom > 0
                       else float("nan"))
        return out

    def med(self, path: str, metric: str) -> float:
        values = []
        for s in self.samples[path]:
            if metric == "rps":
                values.append(s.throughput.rps)
            elif metric == "cpu":
                values.append(s.envoy_cpu_us_per_req)
            else:
                values.append(getattr(s.latency, metric))
        return median(values)


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


def _measure(target: Target, opts: Options, workdir: Path) -> Sample:
    before = sum(proc_stat(p).cpu_s for p in target.envoy_pids)
    t0 = time.monotonic()
    lat = tools.fixed_rate(target.url, target.host, rate=opts.rate,
                           connections=opts.connections, seconds=opts.seconds,
                           warmup=opts.warmup, log_file=workdir / f"h2load-{target.name}.log")
    cpu = sum(proc_stat(p).cpu_s for p in target.envoy_pids) - before
    elapsed = time.monotonic() - t0
    # requests during warm-up count too for CPU: estimate them from the achieved rate
    total_reqs = max(1.0, lat.rate * elapsed)
    thr = tools.max_throughput(target.url, target.host, connections=opts.wrk_connections,
                               seconds=opts.wrk_seconds)
    return Sample(lat, thr, cpu / total_reqs * 1e6 if target.envoy_pids else 0.0)


def run(opts: Options, log: Callable[[str], None] = print) -> Result:
    tools.ensure_tools()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-dp-") as tmp:
        workdir = Path(tmp)
        cp = ControlPlaneProcess(workdir / "shoal").start()
        agents: list[AgentProcess] = []
        pairs: list[EnvoyPair] = []
        try:
            with cp.client() as c:
                c.apply(SERVICE_YAML, source="bench")
            app_port = free_port()
            server = AgentProcess(cp, service=SERVICE, port=SERVICE_PORT, app_port=app_port,
                                  name="bench-server-0",
                                  command=tools.nginx_command(workdir / "nginx", app_port))
            idle_port = free_port()
            client = AgentProcess(cp, service="bench-client", port=8081, app_port=idle_port,
                                  name="bench-client-0",
                                  command=[sys.executable, "-m", "http.server", "--bind",
                                           "127.0.0.1", str(idle_port)])
            agents = [server.start(), client.start()]
            cp.wait_synced({server.name, client.name}, timeout=90)
            outbound = int(_agent_json(cp, client)["outboundPort"])
            shoal_pids = [_envoy_pid(cp, client), _envoy_pid(cp, server)]
            pair = EnvoyPair(workdir, app_port)
            pairs.append(pair)
            if opts.ablation:
                pairs.append(EnvoyPair(workdir, app_port, shoal_like=True, label="ablation"))
            for p in pairs:
                p.start()
            targets = [
                Target("direct", app_port, None),
                Target("shoal", outbound, HOST, shoal_pids),
                Target("hand-written", pair.port, HOST, pair.pids),
            ]
            if opts.ablation:
                targets.append(Target(ABLATION, pairs[1].port, HOST, pairs[1].pids))
            for t in targets:
                _wait_ok(t)
            log(f"ready: nginx :{app_port}, shoal outbound :{outbound}, pair :{pair.port}")
            samples: dict[str, list[Sample]] = {t.name: [] for t in targets}
            for r in range(opts.rounds):
                n = r % len(targets)
                order = targets[n:] + targets[:n]
                for t in order:
                    s = _measure(t, opts, workdir)
                    samples[t.name].append(s)
                    log(f"round {r + 1} {t.name:>12}: p50 {s.latency.p50_ms:.3f} ms "
                        f"p99 {s.latency.p99_ms:.3f} ms ({s.latency.requests} req, "
                        f"{s.latency.errors} err) | wrk {s.throughput.rps:,.0f} req/s "
                        f"| Envoy CPU {s.envoy_cpu_us_per_req:.0f} us/req")
            sidecars = [int(_agent_json(cp, a)["adminPort"]) for a in (client, server)]
            findings = compare_configs(sidecars, list(pair.admin_ports))
            return Result(opts, samples, findings)
        finally:
            for p in pairs:
                p.stop()
            for a in reversed(agents):
                a.stop()
            cp.stop()
