"""Markdown for each benchmark's results, with the verdict against its targets."""

from __future__ import annotations

from bench import controlplane, dataplane
from bench.report import table
from bench.stats import median

ADDED_LATENCY_TARGET = 1.10  # shoal's added latency within 10 % of the hand-written pair
CONVERGE_P99_TARGET_S = 1.0
RSS_TARGET_MB = 300.0


def _head(title: str, date: str, machine: str, command: str) -> str:
    return (f"## {title}\n\n* date: {date}\n* machine: {machine}\n"
            f"* command: `{command}`\n")


def _ms(v: float) -> str:
    return f"{v:.3f}"


def dataplane_md(r: dataplane.Result, date: str, machine: str, command: str) -> str:
    o = r.options
    direct = {m: r.med("direct", m) for m in ("p50_ms", "p90_ms", "p99_ms")}
    rows = []
    for path in r.paths:
        added = [r.med(path, m) - direct[m] for m in ("p50_ms", "p99_ms")]
        errors = sum(s.latency.errors + s.throughput.errors for s in r.samples[path])
        rows.append([path, _ms(r.med(path, "p50_ms")), _ms(r.med(path, "p90_ms")),
                     _ms(r.med(path, "p99_ms")),
                     "—" if path == "direct" else f"+{added[0]:.3f}",
                     "—" if path == "direct" else f"+{added[1]:.3f}",
                     f"{r.med(path, 'rps'):,.0f}",
                     "—" if path == "direct" else f"{r.med(path, 'cpu'):.0f}", str(errors)])
    shoal_added = r.med("shoal", "p50_ms") - direct["p50_ms"]
    pair_added = r.med("hand-written", "p50_ms") - direct["p50_ms"]
    ratio_of_medians = shoal_added / pair_added if pair_added > 0 else float("nan")
    paired = r.added_ratios()
    ratio = median(paired)
    p99_ratio = ((r.med("shoal", "p99_ms") - direct["p99_ms"])
                 / max(1e-9, r.med("hand-written", "p99_ms") - direct["p99_ms"]))
    tput = r.med("shoal", "rps") / r.med("hand-written", "rps")
    ok = ratio <= ADDED_LATENCY_TARGET
    spread = f"{min(paired):.2f} to {max(paired):.2f}"
    noisy = min(paired) <= ADDED_LATENCY_TARGET < max(paired)
    ablation = ""
    if dataplane.ABLATION in r.samples:
        abl = median(r.added_ratios(dataplane.ABLATION))
        vs_shoal = median(r.added_ratios("shoal", dataplane.ABLATION))
        ablation = (f"\n\nAblation: the hand-written pair **with shoal's route/cluster extras** "
                    f"(retry policy, `timeout: 0s`, unlimited circuit breakers, "
                    f"`allow_absolute_url`) adds {abl:.2f} times the plain pair's latency; shoal "
                    f"adds {vs_shoal:.2f} times the ablation pair's.")
    rounds = []
    for path in r.paths:
        for i, s in enumerate(r.samples[path]):
            rounds.append([str(i + 1), path, _ms(s.latency.p50_ms), _ms(s.latency.p90_ms),
                           _ms(s.latency.p99_ms), f"{s.latency.rate:,.0f}",
                           f"{s.throughput.rps:,.0f}", f"{s.envoy_cpu_us_per_req:.0f}"])
    findings = "\n".join(f"* {line}" for line in r.config_findings) or "* (no difference)"
    return f"""{_head("Data plane: direct vs shoal vs hand-written Envoy pair", date, machine,
                      command)}
Load: h2load `--h1 --rps` at **{o.rate} req/s over {o.connections} connections**
({o.rate // o.connections}/s each, at most one request in flight per connection) for
{o.seconds} s after a {o.warmup} s warm-up; then `wrk -t1 -c{o.wrk_connections}
-d{o.wrk_seconds}s` for max throughput. {o.rounds} round(s), path order rotating per round;
the table shows the **median over rounds**. Latencies in ms; "Envoy CPU" is the CPU time
of both Envoys per request during the fixed-rate run (warm-up included).

{table(["path", "p50", "p90", "p99", "added p50", "added p99", "max req/s (wrk)",
        "Envoy CPU µs/req", "errors"], rows)}

**Verdict: {"PASS" if ok else "FAIL"}** — added latency at p50, shoal / hand-written,
paired per round (same round's direct run as the base): median **{ratio:.2f}**
(rounds: {spread}; target ≤ {ADDED_LATENCY_TARGET:.2f}){
" — the rounds straddle the target: the difference is within this machine's noise" if noisy
else ""}. From the medians in the table: shoal adds {shoal_added:.3f} ms, the pair
{pair_added:.3f} ms (ratio {ratio_of_medians:.2f}); at p99 {p99_ratio:.2f}; max throughput
shoal / hand-written = {tput:.2f}.{ablation}

Generated config (sidecars' `/config_dump`) vs the hand-written bootstraps, fields set
on the request path:

{findings}

<details><summary>Every round</summary>

{table(["round", "path", "p50", "p90", "p99", "achieved req/s", "wrk req/s",
        "Envoy CPU µs/req"], rounds)}

</details>
"""


def controlplane_md(r: controlplane.Result, date: str, machine: str, command: str) -> str:
    o = r.options
    p99 = r.pct(99)
    ok_conv = p99 < CONVERGE_P99_TARGET_S
    peak = max(r.hwm_mb, r.rss_peak_rounds_mb)
    ok_rss = peak < RSS_TARGET_MB
    rows = [
        ["ADS clients (fake sidecars)",
         f"{o.clients} in {o.workers} worker process(es), "
         f"{'delta' if o.delta else 'state-of-the-world'}, one gRPC connection each"],
        ["mesh", f"{o.services} Services x 2 Workloads, a DestinationRule (2 subsets) and a "
                 f"VirtualService each; store sqlite"],
        ["initial sync of all clients", f"{r.initial_sync_s:.2f} s "
                                        f"(control plane CPU {r.cpu_sync_s:.1f} s)"],
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
                                               f"({r.cpu_rounds_s / o.rounds:.2f} s per change)"],
    ]
    per_round = [[str(i + 1), *(f"{v * 1000:.0f}" for v in stats)]
                 for i, stats in enumerate(r.per_round)]
    return f"""{_head("Control plane: convergence of N sidecars", date, machine, command)}
Each round applies a VirtualService weight change (80/20 ↔ 20/80) for one service and
measures, per client, the time from just before the apply HTTP call until that client
has received and ACKed the route configuration carrying the new split ({o.rounds} rounds,
{o.pause:g} s apart).

{table(["measure", "value"], rows)}

**Verdict:** convergence p99 {p99 * 1000:.0f} ms — **{"PASS" if ok_conv else "FAIL"}**
(target < {CONVERGE_P99_TARGET_S * 1000:.0f} ms at {o.clients} proxies); control plane
peak RSS {peak:.0f} MB — **{"PASS" if ok_rss else "FAIL"}** (target < {RSS_TARGET_MB:.0f} MB).

{table(["round", "first client ms", "p50 ms", "p99 ms", "max ms"], per_round)}
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
