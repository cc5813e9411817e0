"""Rate-limit benchmark: p50/p99 per request through real sidecars with and without a
global RateLimitPolicy (the check to the rate-limit service is on the request path), and
the rate-limit service's decisions per second (gRPC ShouldRateLimit, memory backend).

Runs a control plane, a separate `shoal ratelimit serve`, one ``web`` replica and a
client sidecar; h2load at a fixed rate with per-request logs gives the percentiles.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from shoal.testing.local import AgentProcess, ControlPlaneProcess, free_port, wait_for

POLICY = """apiVersion: policy.shoal.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: bench}
spec:
  host: web
  mode: global
  limits: [{name: all, requestsPerUnit: 1000000, unit: second}]
"""


@dataclass
class Result:
    rate: int
    without: tuple[float, float]  # p50, p99 ms
    with_policy: tuple[float, float]
    decisions_per_s: float
    check_p50_ms: float
    check_p99_ms: float


def _pcts(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return q[49], q[98]


def _h2load(outbound: int, rate: int, seconds: int, log: Path) -> list[float]:
    subprocess.run(["h2load", f"http://127.0.0.1:{outbound}/", "-H", ":authority: web:8080",
                    "-c", "2", f"--rps={rate // 2}", "-D", str(seconds),
                    f"--log-file={log}"], capture_output=True, check=True, timeout=seconds + 60)
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    return [int(r[2]) / 1000 for r in rows if r[1] == "200"]


async def _decisions(address: str, seconds: float, concurrency: int = 32
                     ) -> tuple[float, list[float]]:
    req = rls_pb2.RateLimitRequest(domain="shoal", descriptors=[common_pb2.RateLimitDescriptor(
        entries=[common_pb2.RateLimitDescriptor.Entry(key="shoal_rule",
                                                      value="default/bench/all")])])
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as ch:
        stub = rls_pb2_grpc.RateLimitServiceStub(ch)
        end = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                t = time.perf_counter()
                await stub.ShouldRateLimit(req)
                latencies.append((time.perf_counter() - t) * 1000)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(latencies) / (time.perf_counter() - start), latencies


def run(rate: int = 300, seconds: int = 8, log: Callable[[str], None] = print) -> Result:
    import sys

    from tests.e2e.conftest import agent_info, app_command
    from tests.ratelimit.procs import RateLimitProcess

    work = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    rls_port = free_port()
    cp = ControlPlaneProcess(work, extra=["--ratelimit-address", f"127.0.0.1:{rls_port}"]
                             ).start()
    rls = RateLimitProcess(work, cp.url, port=rls_port)
    agents = [AgentProcess(cp, service="web", port=8080, name="web",
                           command=app_command("http")),
              AgentProcess(cp, service="client", port=8080, name="client",
                           command=[sys.executable, "-m", "shoal.testing.apps", "http"])]
    try:
        rls.start()
        for a in agents:
            a.start()
        cp.wait_synced({"web", "client"})
        out = agent_info(agents[1])["outboundPort"]
        log("without policy ...")
        without = _pcts(_h2load(out, rate, seconds, work / "without.log"))
        with cp.client() as c:
            c.apply(POLICY)
        wait_for(lambda: rls.stats()["rules"] == 1, 30, "rules")
        wait_for(lambda: _h2load(out, 10, 1, work / "probe.log") is not None
                 and rls.stats()["requests"] > 0, 30, "the policy in the sidecar")
        log("with policy ...")
        with_policy = _pcts(_h2load(out, rate, seconds, work / "with.log"))
        log("decisions per second ...")
        dps, lat = asyncio.run(_decisions(rls.address, seconds))
        p50, p99 = _pcts(lat)
        return Result(rate, without, with_policy, dps, p50, p99)
    finally:
        for a in agents:
            a.stop()
        rls.stop()
        cp.stop()


def markdown(r: Result, when: str, info: str, command: str) -> str:
    return "\n".join([
        "## Rate limiting (global check)", "",
        f"{when} · {info} · `{command}`", "",
        f"h2load, 2 connections, {r.rate} req/s fixed, through client sidecar → server "
        "sidecar (1 replica); a never-reached 1,000,000/s global limit, so every request "
        "makes one ShouldRateLimit call to a separate `shoal ratelimit serve` (memory).", "",
        "| path | p50 ms | p99 ms |", "|---|---|---|",
        f"| without RateLimitPolicy | {r.without[0]:.3f} | {r.without[1]:.3f} |",
        f"| with global RateLimitPolicy | {r.with_policy[0]:.3f} | {r.with_policy[1]:.3f} |",
        "",
        f"Rate-limit service alone (32 concurrent gRPC calls, one process): "
        f"**{r.decisions_per_s:,.0f} decisions/s**, p50 {r.check_p50_ms:.2f} ms, "
        f"p99 {r.check_p99_ms:.2f} ms per call.",
    ])
