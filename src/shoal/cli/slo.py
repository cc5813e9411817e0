"""`shoal slo status`: attainment, error budget and burn rates of every SLO."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table

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
