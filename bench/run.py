"""``python -m bench.run [dataplane|controlplane|all] [--quick]``: run, then rewrite the
benchmark's section of docs/benchmarks.md (date, machine, command, results, verdict)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench import controlplane, dataplane, machine, render
from bench.replica import VARIANTS
from bench.report import rewrite_section
from bench.tools import MissingTools

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("which", nargs="?", default="all",
                   choices=["dataplane", "controlplane", "ratelimit", "failover", "all"])
    p.add_argument("--quick", action="store_true", help="short runs (smoke test, noisy numbers)")
    p.add_argument("--doc", type=Path, default=DOC, help="markdown file to update (%(default)s)")
    p.add_argument("--no-write", action="store_true", help="print results, leave the doc alone")
    d = p.add_argument_group("data plane")
    d.add_argument("--rounds", type=int, help="rounds over the paths (5; quick 1)")
    d.add_argument("--rate", type=int, default=1000, help="fixed rate, req/s (%(default)s)")
    d.add_argument("--connections", type=int, default=4, help="h2load connections (%(default)s)")
    d.add_argument("--seconds", type=int, help="fixed-rate duration (10; quick 5)")
    d.add_argument("--no-ablation", dest="ablation", action="store_false",
                   help="skip the ablations (static replicas of shoal's sidecars, one feature "
                        "switched off each)")
    d.add_argument("--variants", help="comma-separated ablation variants (default: all of "
                                      f"{','.join(VARIANTS).replace('%', '%%')}; 'full' is always "
                                      "included)")
    d.add_argument("--wrk-connections", type=int, default=16, help="(%(default)s)")
    d.add_argument("--wrk-seconds", type=int, help="max-throughput duration (5; quick 3)")
    c = p.add_argument_group("control plane")
    c.add_argument("--clients", type=int, help="fake ADS clients (1000; quick 200)")
    c.add_argument("--services", type=int, default=50, help="(%(default)s)")
    c.add_argument("--changes", type=int, help="change rounds (10; quick 2)")
    c.add_argument("--workers", type=int, default=2, help="client processes (%(default)s)")
    c.add_argument("--delta", action=argparse.BooleanOptionalAction, default=True,
                   help="delta xDS, the agents' default (--no-delta: state-of-the-world)")
    c.add_argument("--instances", type=int, default=1,
                   help="control-plane instances sharing one etcd, the clients spread over "
                        "them by worker (%(default)s)")
    c.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite",
                   help="with one instance (several always share etcd) (%(default)s)")
    c.add_argument("--profile", type=Path, metavar="FILE",
                   help="py-spy the control plane during the rounds (needs py-spy)")
    return p.parse_args(argv)


def _pick(value: int | None, full: int, quick: int, is_quick: bool) -> int:
    return value if value is not None else (quick if is_quick else full)


def _variants(text: str | None) -> tuple[str, ...]:
    if not text:
        return tuple(VARIANTS)
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    return ("full", *(v for v in chosen if v != "full"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    command = " ".join([".venv/bin/python -m bench.run", *map(shlex.quote, argv)])
    info = machine.describe()
    print(f"machine: {info}", flush=True)
    if a.which in ("dataplane", "all"):
        opts = dataplane.Options(
            rounds=_pick(a.rounds, 5, 1, a.quick), rate=a.rate, connections=a.connections,
            seconds=_pick(a.seconds, 10, 5, a.quick), warmup=1 if a.quick else 2,
            wrk_connections=a.wrk_connections, wrk_seconds=_pick(a.wrk_seconds, 5, 3, a.quick),
            ablation=a.ablation, variants=_variants(a.variants))
        print(f"== data plane: {opts}", flush=True)
        try:
            dp = dataplane.run(opts, log=lambda s: print(s, flush=True))
        except MissingTools as e:
            print(f"data plane benchmark needs Debian packages: {e}", file=sys.stderr)
            return 2
        md = render.dataplane_md(dp, machine.now(), info, command)
        _emit(a, "dataplane", md)
    if a.which in ("controlplane", "all"):
        copts = controlplane.Options(
            clients=_pick(a.clients, 1000, 200, a.quick), services=a.services,
            rounds=_pick(a.changes, 10, 2, a.quick), workers=a.workers, delta=a.delta,
            instances=a.instances, store=a.store, profile=a.profile)
        print(f"== control plane: {copts}", flush=True)
        cpr = controlplane.run(copts, log=lambda s: print(s, flush=True))
        _emit(a, "controlplane", render.controlplane_md(cpr, machine.now(), info, command))
    if a.which == "ratelimit":  # not part of "all": it starts its own mesh
        from bench import ratelimit
        rl = ratelimit.run(seconds=4 if a.quick else 8, log=lambda s: print(s, flush=True))
        _emit(a, "ratelimit", ratelimit.markdown(rl, machine.now(), info, command))
    if a.which == "failover":  # not part of "all": two clusters, needs root
        from bench import failover
        fo = failover.run(rounds=2 if a.quick else 5, log=lambda s: print(s, flush=True),
                          cp_down_rounds=1 if a.quick else 3)
        _emit(a, "failover", failover.markdown(fo, machine.now(), info, command))
    return 0


def _emit(a: argparse.Namespace, name: str, md: str) -> None:
    print(md, flush=True)
    if not a.no_write:
        rewrite_section(a.doc, name, md)
        print(f"updated {a.doc} (section {name})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
