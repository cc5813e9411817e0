"""Max throughput and Envoy CPU per request at saturation (wrk) for shoal's live sidecars,
the hand-written mTLS pair and static replicas of the sidecars with one feature removed
each (``bench.replica.VARIANTS``): which feature costs what when Envoy is the bottleneck.
The data-plane bench measures replicas at a fixed rate only; at 1,000 req/s most of the
CPU is per wake-up, at saturation it is per request.

    .venv/bin/python -m bench.saturation --rounds 4 --variants full,-file-log,-tracing,bare
    .venv/bin/python -m bench.saturation -- --access-log all   # control-plane arguments

Rounds rotate the order; medians over rounds, and the median of each round's ratio to
the pair's rate in that round ("paired": the machine's drift between rounds cancels).
Prints only (docs/benchmarks.md quotes it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from statistics import median

from bench import certs, tools
from bench.dataplane import HOST, Target, _agent_json, _cpu, _envoy_pid, _mesh, _wait_ok
from bench.envoy_pair import EnvoyPair
from bench.replica import VARIANTS, ReplicaPair, Sidecar
from shoal.testing.local import ControlPlaneProcess, free_port


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.saturation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--variants", default="full,-file-log,-tracing,-stats,-retry,bare")
    p.add_argument("cp_args", nargs="*", help="extra `shoal control-plane` arguments")
    a = p.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    tools.ensure_tools()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-sat-") as tmp:
        work = Path(tmp)
        cp = ControlPlaneProcess(work / "shoal", extra=a.cp_args).start()
        app_port = free_port()
        server, client = _mesh(cp, work / "nginx", app_port)
        agents = [server.start(), client.start()]
        pairs: list[EnvoyPair | ReplicaPair] = []
        try:
            cp.wait_synced({server.name, client.name}, timeout=90)
            info = {x.name: _agent_json(cp, x) for x in agents}
            targets = [Target("shoal", int(info[client.name]["outboundPort"]), HOST,
                              [_envoy_pid(cp, client), _envoy_pid(cp, server)])]
            _wait_ok(targets[0])  # every resource warm before the replicas copy it
            mtls = EnvoyPair(work, app_port, certs=certs.make(work / "certs"), label="mtls")
            pairs.append(mtls)
            sidecars = {n: Sidecar(cp.workdir / "run" / n, int(j["adminPort"]),
                                   int(j["inboundPort"])) for n, j in info.items()}
            for v in variants:
                pairs.append(ReplicaPair(work, v, sidecars[client.name], sidecars[server.name]))
            for pair in pairs:
                pair.start()
            targets.append(Target("hand-written mTLS", mtls.port, HOST, mtls.pids))
            targets += [Target(f"replica {rp.variant}", rp.port, HOST, rp.pids)
                        for rp in pairs[1:] if isinstance(rp, ReplicaPair)]
            for t in targets:
                _wait_ok(t)
            runs: dict[str, list[tuple[float, float]]] = {t.name: [] for t in targets}
            for r in range(a.rounds):
                n = r % len(targets)
                for t in targets[n:] + targets[:n]:
                    before = _cpu(t.envoy_pids)
                    thr = tools.max_throughput(t.url, t.host, connections=a.connections,
                                               seconds=a.seconds)
                    cpu = _cpu(t.envoy_pids) - before
                    runs[t.name].append((thr.rps, cpu / max(1.0, thr.rps * a.seconds) * 1e6))
            base = median(rps for rps, _ in runs["hand-written mTLS"])
            print(f"wrk -c{a.connections} -d{a.seconds}s, {a.rounds} rounds, medians")
            print("| path | max req/s | / mTLS pair | paired | Envoy CPU µs/req | "
                  "rounds (req/s) |")
            print("|---|---|---|---|---|---|")
            pair_runs = runs["hand-written mTLS"]
            for name, xs in runs.items():
                rps = median(x[0] for x in xs)
                # each round's rate over the pair's in the same round: drift cancels
                paired = median(x[0] / p[0] for x, p in zip(xs, pair_runs, strict=True))
                print(f"| {name} | {rps:,.0f} | {rps / base:.2f} | {paired:.2f} | "
                      f"{median(x[1] for x in xs):.0f} | "
                      f"{', '.join(f'{x[0]:,.0f}' for x in xs)} |")
        finally:
            for pair in pairs:
                pair.stop()
            for x in reversed(agents):
                x.stop()
            cp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
