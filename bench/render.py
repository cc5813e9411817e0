"""Markdown for each benchmark's results, with the verdict against its targets."""

from __future__ import annotations

from bench import controlplane, dataplane
from bench.replica import VARIANTS
from bench.report import table
from bench.stats import median

ADDED_LATENCY_TARGET = 1.10  # shoal's added latency within 10 % of the hand-written pair
ADDED_P99_TARGET = 1.25
THROUGHPUT_TARGET = 0.85  # shoal's max throughput / the pair's
ENVOY_CPU_TARGET = 1.2  # shoal's Envoy CPU per request / the pair's
MESH_CPU_TARGET_US = 5.0  # control plane + agents CPU per request
ENDPOINT_P99_TARGET_S = 0.5  # issue 13: a workload registering or leaving
CONVERGE_P99_TARGET_S = 1.0



def rss_target_mb(proxies: int) -> float:
    """The control plane's peak RSS target: < 300 MB at 1,000 proxies (the first target),
    < 1 GB beyond (issue 13's, set at 5,000 proxies over 1,000 services)."""
    return 300.0 if proxies <= 1000 else 1000.0


def _head(title: str, date: str, machine: str, command: str) -> str:
    return (f"## {title}\n\n* date: {date}\n* machine: {machine}\n"
            f"* command: `{command}`\n")


def _ms(v: float) -> str:
    return f"{v:.3f}"


def _range(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(min(values))} to {fmt.format(max(values))}"


def _verdict(r: dataplane.Result, base: str) -> tuple[float, list[float], bool]:
    paired = r.added_ratios("shoal", base)
    ratio = median(paired)
    return ratio, paired, ratio <= ADDED_LATENCY_TARGET


def dataplane_md(r: dataplane.Result, date: str, machine: str, command: str) -> str:
    o = r.options
    direct = {m: r.med("direct", m) for m in ("p50_ms", "p90_ms", "p99_ms", "mesh_cpu")}
    main = [p for p in r.paths if not p.startswith(dataplane.REPLICA)]
    rows = []
    for path in main:
        added = [r.med(path, m) - direct[m] for m in ("p50_ms", "p99_ms")]
        errors = sum(s.latency.errors + (s.throughput.errors if s.throughput else 0)
                     for s in r.samples[path])
        sent = r.med(path, "rate")
        name = path if sent >= 0.95 * o.rate else f"{path} ⚠ only {sent:,.0f} req/s sent"
        rows.append([name, _ms(r.med(path, "p50_ms")), _ms(r.med(path, "p90_ms")),
                     _ms(r.med(path, "p99_ms")),
                     "—" if path == "direct" else f"+{added[0]:.3f}",
                     "—" if path == "direct" else f"+{added[1]:.3f}",
                     f"{r.med(path, 'rps'):,.0f}",
                     "—" if path == "direct" else f"{r.med(path, 'cpu'):.0f}",
                     "—" if path == "direct" else
                     f"{r.med(path, 'mesh_cpu') - direct['mesh_cpu']:+.0f}", str(errors)])
    added_by = {p: r.med(p, "p50_ms") - direct["p50_ms"] for p in main if p != "direct"}
    ratio, paired, ok = _verdict(r, dataplane.MTLS)
    ratio_plain, paired_plain, ok_plain = _verdict(r, dataplane.PLAIN)
    tls_cost = median(r.diffs_us(dataplane.MTLS, dataplane.PLAIN))
    tput = r.med("shoal", "rps") / r.med(dataplane.MTLS, "rps")
    noisy = min(paired) <= ADDED_LATENCY_TARGET < max(paired)
    conns = "; ".join(f"{k}: {cx} upstream connections for {rq:,} requests"
                      for k, (cx, rq) in r.connections.items())
    findings = "\n".join(f"* {line}" for line in r.config_findings) or "* (no difference)"
    rounds = []
    for path in r.paths:
        for i, s in enumerate(r.samples[path]):
            rounds.append([str(i + 1), path, _ms(s.latency.p50_ms), _ms(s.latency.p90_ms),
                           _ms(s.latency.p99_ms), f"{s.latency.rate:,.0f}",
                           f"{s.throughput.rps:,.0f}" if s.throughput else "—",
                           f"{s.envoy_cpu_us_per_req:.0f}", f"{s.mesh_cpu_us_per_req:.0f}"])
    return f"""{_head("Data plane: direct vs shoal vs hand-written Envoy pairs (plaintext, mTLS)",
                      date, machine, command)}
Load: h2load `--h1 --rps` at **{o.rate} req/s over {o.connections} connections**
({o.rate // o.connections}/s each, at most one request in flight per connection) for
{o.seconds} s after a {o.warmup} s warm-up; then `wrk -t1 -c{o.wrk_connections}
-d{o.wrk_seconds}s` for max throughput (main paths only). {o.rounds} round(s), path order
rotating per round; before each run the bench waits until the control plane and agents are
idle again (telemetry ingested). The tables show the **median over rounds**. Latencies in
ms. "Envoy CPU" is the CPU time of the path's two Envoys per request during the
fixed-rate run; "CP+agents CPU" is the control plane's and both agents' CPU per request
from the start of the run until they are idle again (the telemetry ingest), minus the
same for `direct` (idle background).

{table(["path", "p50", "p90", "p99", "added p50", "added p99", "max req/s (wrk)",
        "Envoy CPU µs/req", "CP+agents CPU µs/req", "errors"], rows)}

**Verdict (like for like, vs the hand-written mTLS pair): {"PASS" if ok else "FAIL"}** —
shoal's added p50 latency / the mTLS pair's, paired per round (same round's direct run as
the base): median **{ratio:.2f}** (rounds: {_range(paired)}; target ≤
{ADDED_LATENCY_TARGET:.2f}){
" — the rounds straddle the target: within this machine's noise" if noisy else ""}. From the
medians: shoal adds {added_by["shoal"]:.3f} ms, the mTLS pair {added_by[dataplane.MTLS]:.3f} ms.
Max throughput shoal / mTLS pair = {tput:.2f}.

{_targets_md(r)}

Against the **plaintext** pair: {ratio_plain:.2f} (rounds: {_range(paired_plain)}) —
{"PASS" if ok_plain else "FAIL"}; the plaintext pair adds {added_by[dataplane.PLAIN]:.3f} ms, so
mTLS itself costs {tls_cost:+.0f} µs at p50 (mTLS pair - plaintext pair, paired).
Connection reuse over the run: {conns}.
{_ablation_md(r)}
Generated config (sidecars' `/config_dump`) vs the hand-written mTLS bootstraps, fields
set on the request path:

{findings}

<details><summary>Every round</summary>

{table(["round", "path", "p50", "p90", "p99", "achieved req/s", "wrk req/s",
        "Envoy CPU µs/req", "CP+agents CPU µs/req (raw)"], rounds)}

</details>
"""


def _targets_md(r: dataplane.Result) -> str:
    """Issue 12's targets, shoal as shipped vs the hand-written mTLS pair (medians), and
    what each opt-in (dataplane.OPT_INS) costs when switched on."""
    direct = {m: r.med("direct", m) for m in ("p50_ms", "p99_ms", "mesh_cpu")}

    def added(path: str, m: str) -> float:
        return r.med(path, m) - direct[m]

    pair = dataplane.MTLS
    checks = [
        ("added p50 / pair's", added("shoal", "p50_ms") / added(pair, "p50_ms"),
         ADDED_LATENCY_TARGET, "≤"),
        ("added p99 / pair's", added("shoal", "p99_ms") / added(pair, "p99_ms"),
         ADDED_P99_TARGET, "≤"),
        ("max throughput / pair's", r.med("shoal", "rps") / r.med(pair, "rps"),
         THROUGHPUT_TARGET, "≥"),
        ("Envoy CPU per request / pair's", r.med("shoal", "cpu") / r.med(pair, "cpu"),
         ENVOY_CPU_TARGET, "≤"),
        ("CP + agents CPU µs per request", added("shoal", "mesh_cpu"), MESH_CPU_TARGET_US, "≤"),
    ]
    rows = [[what, f"{v:.2f}", f"{op} {target:g}",
             "PASS" if (v <= target if op == "≤" else v >= target) else "FAIL"]
            for what, v, target, op in checks]
    out = "Targets (issue 12), shoal as shipped vs the hand-written mTLS pair, medians:\n\n"
    out += table(["measure", "value", "target", ""], rows)
    for path, (_, what) in dataplane.OPT_INS.items():
        if path not in r.samples:
            continue
        d50 = r.diffs_us(path, "shoal")
        out += (f"\n\n{what} when switched on, for the record: {median(d50):+.0f} µs at "
                f"p50 (rounds {_range(d50, '{:+.0f}')}), max throughput "
                f"{r.med(path, 'rps'):,.0f} vs {r.med('shoal', 'rps'):,.0f} req/s "
                f"({r.med(path, 'rps') / r.med(pair, 'rps'):.2f} of the pair's), "
                f"Envoy CPU {r.med(path, 'cpu'):.0f} µs per request, "
                f"CP + agents {added(path, 'mesh_cpu'):.0f} µs per request.")
    return out


def _ablation_md(r: dataplane.Result) -> str:
    full = dataplane.REPLICA + "full"
    if full not in r.samples:
        return ""
    direct_mesh = r.med("direct", "mesh_cpu")
    rows = []
    for path in r.replicas:
        variant = path[len(dataplane.REPLICA):]
        what = VARIANTS[variant][0]
        p50 = r.med(path, "p50_ms")
        if path == full:
            d50 = r.diffs_us("shoal", full)
            delta = f"shoal - full: {median(d50):+.0f} ({_range(d50, '{:+.0f}')})"
            dcpu = dmesh = "—"
        else:
            d50 = r.diffs_us(full, path)
            delta = f"{median(d50):+.0f} ({_range(d50, '{:+.0f}')})"
            dcpu = f"{median(r.diffs_us(full, path, 'cpu')):+.0f}"
            dmesh = f"{median(r.diffs_us(full, path, 'mesh_cpu')):+.0f}"
        sent = r.med(path, "rate")
        if sent < 0.95 * r.options.rate:
            what += f" ⚠ only {sent:,.0f} req/s sent: stalls, latency not comparable"
        rows.append([f"`{variant}`", what, _ms(p50), _ms(r.med(path, "p99_ms")), delta,
                     f"{r.med(path, 'cpu'):.0f}", dcpu,
                     f"{r.med(path, 'mesh_cpu') - direct_mesh:.0f}", dmesh])
    bare = dataplane.REPLICA + "bare"
    rest = ""
    if bare in r.samples:
        d = r.diffs_us(bare, dataplane.MTLS)
        rest = (f"\n\nWhat is left: `bare` - hand-written mTLS pair = {median(d):+.0f} µs at p50 "
                f"(rounds {_range(d, '{:+.0f}')}); Envoy CPU "
                f"{median(r.diffs_us(bare, dataplane.MTLS, 'cpu')):+.0f} µs/req.")
    return f"""
Ablations: static replicas of the two sidecars (`bench/replica.py`: their own bootstrap
and `/config_dump`, xDS replaced by static resources, certificates still over SDS,
telemetry still to the control plane) with one thing switched off. "cost" = `full` -
variant, paired per round, median (range) — what that feature costs at p50; the CPU
columns likewise per request. The `full` row checks the method: shoal - `full`.

{table(["variant", "switched off", "p50", "p99", "cost at p50 µs", "Envoy CPU µs/req",
        "Envoy CPU cost", "CP+agents µs/req", "CP+agents cost"], rows)}{rest}
"""


def controlplane_md(r: controlplane.Result, date: str, machine: str, command: str) -> str:
    o = r.options
    p99 = r.pct(99)
    ok_conv = p99 < CONVERGE_P99_TARGET_S
    peak = max(r.hwm_mb, r.rss_peak_rounds_mb)
    rss_target = rss_target_mb(o.clients)
    ok_rss = peak < rss_target
    rows = [
        ["ADS clients (fake sidecars)",
         f"{o.clients} in {o.workers} worker process(es), "
         f"{'delta' if o.delta else 'state-of-the-world'}, one gRPC connection each"],
        ["mesh", f"{o.services} Services x 2 Workloads, a DestinationRule (2 subsets) and a "
                 f"VirtualService each; store {o.store_used}"],
        ["control-plane instances", f"{o.instances}" + (
            f" (VmHWM each: {', '.join(f'{m:.0f}' for m in r.hwm_per_instance_mb)} MB; "
            "RSS and CPU below summed)" if o.instances > 1 else "")],
        ["initial sync of all clients", f"{r.initial_sync_s:.2f} s "
                                        f"(control plane CPU {r.cpu_sync_s:.1f} s, "
                                        f"clients {r.cpu_clients_sync_s:.1f} s)"],
        [f"change → ACK, p50 ({len(r.change_latencies)} samples)", f"{r.pct(50) * 1000:.0f} ms"],
        ["change → ACK, p99", f"**{p99 * 1000:.0f} ms**"],
        ["change → ACK, max", f"{max(r.change_latencies) * 1000:.0f} ms"],
        ["control plane RSS after initial sync (steady)", f"{r.rss_synced_mb:.0f} MB"],
        ["control plane RSS after the rounds (steady)",
         f"{r.rss_after_mb:.0f} MB ({(r.rss_after_mb - r.rss_synced_mb) / o.rounds:+.1f} MB "
         f"per change)"],
        ["control plane RSS peak during rounds (sampled 10/s)", f"{r.rss_peak_rounds_mb:.0f} MB"],
        ["control plane VmHWM (peak over the run)", f"**{r.hwm_mb:.0f} MB**"],
        ["control plane CPU during the rounds", f"{r.cpu_rounds_s:.2f} s "
                                               f"({r.cpu_rounds_s / o.rounds:.2f} s per change; "
                                               f"the clients "
                                               f"{r.cpu_clients_rounds_s / o.rounds:.2f} s)"],
    ]
    ep99 = r.endpoint_pct(99)
    ok_ep = ep99 < ENDPOINT_P99_TARGET_S
    if r.endpoint_latencies:
        rows.insert(6, [f"workload joins/leaves → endpoints updated, p50 "
                        f"({len(r.endpoint_latencies)} samples)",
                        f"{r.endpoint_pct(50) * 1000:.0f} ms"])
        rows.insert(7, ["workload joins/leaves → endpoints updated, p99",
                        f"**{ep99 * 1000:.0f} ms**"])
    ep_rounds = [[str(i + 1), "joins" if i % 2 == 0 else "leaves",
                  *(f"{v * 1000:.0f}" for v in stats)]
                 for i, stats in enumerate(r.endpoint_rounds)]
    per_round = [[str(i + 1), *(f"{v * 1000:.0f}" for v in stats)]
                 for i, stats in enumerate(r.per_round)]
    return f"""{_head("Control plane: convergence of N sidecars", date, machine, command)}
Each round applies a VirtualService weight change (80/20 ↔ 20/80) for one service and
measures, per client, the time from just before the apply HTTP call until that client
has received and ACKed the route configuration carrying the new split ({o.rounds} rounds,
{o.pause:g} s apart).

Then {len(r.endpoint_rounds)} endpoint rounds: one more Workload of one service registers
(or is removed), timed per client until that service's endpoints in its EDS have (or no
longer have) the workload's address.

{table(["measure", "value"], rows)}

**Verdict:** convergence p99 {p99 * 1000:.0f} ms — **{"PASS" if ok_conv else "FAIL"}**
(target < {CONVERGE_P99_TARGET_S * 1000:.0f} ms at {o.clients} proxies); endpoints p99
{ep99 * 1000:.0f} ms — **{"PASS" if ok_ep else "FAIL"}** (target <
{ENDPOINT_P99_TARGET_S * 1000:.0f} ms); control plane peak RSS {peak:.0f} MB —
**{"PASS" if ok_rss else "FAIL"}** (target < {rss_target:.0f} MB at {o.clients} proxies).

{table(["round", "first client ms", "p50 ms", "p99 ms", "max ms"], per_round)}

{table(["endpoint round", "workload", "first client ms", "p50 ms", "p99 ms", "max ms"],
       ep_rounds)}
{_profile_md(r)}"""


def _profile_md(r: controlplane.Result) -> str:
    if r.profile is None:
        return ""
    total, inclusive, own = r.profile
    rows = [[f"`{name}`", f"{n / max(1, total):.0%}"] for name, n in inclusive]
    own_rows = [[f"`{name}`", f"{n / max(1, total):.0%}"] for name, n in own]
    return f"""
py-spy during the rounds ({total} non-idle samples at 200 Hz):

{table(["inclusive", "share"], rows)}

{table(["self (on CPU)", "share"], own_rows)}
"""
