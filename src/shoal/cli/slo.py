"""`shoal slo status`: attainment, error budget and burn rates of every SLO.
`shoal slo rules`: the same SLOs as Prometheus recording and alerting rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.api import Resource, load_documents, parse_documents
from shoal.api.telemetry import window_seconds
from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table
from shoal.cli.resources import _read
from shoal.errors import ValidationError, Violation
from shoal.telemetry.slo_rules import DEFAULT_FOR, KIND, render

app = typer.Typer(help="Service level objectives: status, budget and burn rates.",
                  no_args_is_help=True)

STATE_STYLE = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red"}


def budget_bar(remaining: float, width: int = 20) -> str:
    """A text bar of the error budget left: ``███████░░░░░░░░░░░░░  35.0%``."""
    filled = round(max(0.0, min(1.0, remaining)) * width)
    return f"{'█' * filled}{'░' * (width - filled)} {remaining * 100:6.1f}%"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}".rstrip("0").rstrip(".") + unit
    return f"{seconds:.0f}s"


def rows(slos: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for s in slos:
        sli = s["sli"] + (f"<{s['thresholdMs']:g}ms" if s.get("thresholdMs") else "")
        att = "-" if s["attainment"] is None else f"{s['attainment']:.3f}%"
        window = s["window"]
        if s["observedSeconds"] < s["windowSeconds"]:
            window += f" ({_duration(s['observedSeconds'])} seen)"
        burns = " ".join(f"{b['longWindow']}/{b['shortWindow']}:{b['longBurnRate']:.1f}x/"
                         f"{b['shortBurnRate']:.1f}x" for b in s["burnRates"])
        state = s["state"]
        out.append([f"{s['namespace']}/{s['name']}", s["service"].split(".")[0], sli,
                    f"{s['target']:g}%", window, att, budget_bar(s["errorBudget"]["remaining"]),
                    burns, f"[{STATE_STYLE.get(state, '')}]{state}[/]"])
    return out


@app.command("status")
def status(ctx: typer.Context,
           output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE) -> None:
    """Every SLO: attainment over its window, error budget left, burn rates, alert state."""
    client: ApiClient = ctx.obj()
    with client:
        slos = client.request("GET", "/api/v1/slos")["slos"]
    if output in (Format.YAML, Format.JSON):
        dump(slos, output)
        return
    table(["slo", "service", "sli", "target", "window", "attainment", "budget left",
           "burn (long/short)", "state"], rows(slos), title="service level objectives")
    for s in slos:
        if s["state"] != "OK":
            console.print(f"{s['namespace']}/{s['name']}: {s['reason']}")


def _from_files(paths: list[Path]) -> list[Resource]:
    """Every resource of the files, validated as `shoal apply` does (all or nothing)."""
    problems: list[Violation] = []
    out: list[Resource] = []
    seen: dict[tuple[str, str, str], str] = {}
    for source, text in _read(paths):
        try:
            resources = parse_documents(load_documents(text, source), source)
        except ValidationError as e:
            problems += e.violations
            continue
        for r in resources:
            key = (r.kind, r.metadata.namespace, r.metadata.name)
            if key in seen:
                problems.append(Violation("metadata.name", f"{r.kind} {key[1]}/{key[2]} is "
                                          f"also in {seen[key]}", source))
            seen.setdefault(key, source)
            out.append(r)
    if problems:
        raise ValidationError(problems)
    return out


@app.command("rules")
def rules(
    ctx: typer.Context,
    filename: Annotated[list[Path] | None, typer.Option(
        "--filename", "-f", help="Generate from these YAML files or directories ('-' = "
        "stdin) instead of the control plane's SLOs.")] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Only the SLOs of this namespace (default: all).")] = None,
    domain: Annotated[str, typer.Option(
        help="The mesh's DNS domain: hosts resolve to NAME.NAMESPACE.svc.DOMAIN.")
    ] = "cluster.local",
    alert_for: Annotated[str, typer.Option(
        "--for", help="How long a burn-rate alert is pending before it fires (0s: at once).")
    ] = DEFAULT_FOR,
) -> None:
    """Print every SLO as a Prometheus rule file: error-ratio recording rules per window,
    the error budget left, and multi-window multi-burn-rate alerts."""
    try:
        window_seconds(alert_for)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--for") from None
    if filename:
        resources = _from_files(filename)
    else:
        client: ApiClient = ctx.obj()
        with client:
            items = client.list(KIND, namespace)["items"]
        resources = parse_documents(items, client.base_url)
    if namespace:
        resources = [r for r in resources if r.metadata.namespace == namespace]
    typer.echo(render(resources, domain=domain, alert_for=alert_for), nl=False)
