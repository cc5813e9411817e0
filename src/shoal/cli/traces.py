"""`shoal traces`: recent traces, or one trace as a waterfall in the terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table

WIDTH = 40


def waterfall(spans: list[dict[str, Any]], width: int = WIDTH) -> list[list[str]]:
    """Rows (span, service, kind, status, duration, bar) in tree order."""
    if not spans:
        return []
    start = min(s["start_ns"] for s in spans)
    total = max(max(s["end_ns"] for s in spans) - start, 1)
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else ""
        children.setdefault(parent, []).append(s)
    rows: list[list[str]] = []

    def walk(parent: str, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x["start_ns"]):
            a = int((s["start_ns"] - start) / total * width)
            b = max(a + 1, int((s["end_ns"] - start) / total * width))
            bar = " " * a + "█" * (b - a)
            status = "-" if s.get("status") is None else str(s["status"])
            rows.append(["  " * depth + s["name"], s.get("service") or s.get("workload", ""),
                         s["kind"], status + (" !" if s.get("error") else ""),
                         f"{s['duration_ms']:.2f}ms", bar.ljust(width)])
            walk(s["span_id"], depth + 1)

    walk("", 0)
    return rows


def traces(
    ctx: typer.Context,
    trace_id: Annotated[str | None, typer.Argument(help="Show this trace as a waterfall.")
                        ] = None,
    service: Annotated[str | None, typer.Option("--service", "-s",
                                                help="Only traces touching this service.")
                       ] = None,
    limit: Annotated[int, typer.Option(help="How many recent traces.")] = 20,
    output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE,
) -> None:
    """Recent distributed traces (newest first), or one trace's spans by id."""
    client: ApiClient = ctx.obj()
    with client:
        if trace_id:
            data = client.request("GET", f"/api/v1/traces/{trace_id}")
            if output in (Format.JSON, Format.YAML):
                dump(data, output)
                return
            console.print(f"trace {data['trace_id']} ({len(data['spans'])} spans)")
            table(("span", "service", "kind", "status", "duration", "timeline"),
                  waterfall(data["spans"]), title="spans")
            return
        params: dict[str, Any] = {"limit": limit}
        if service:
            params["service"] = service
        data = client.request("GET", "/api/v1/traces", params=params)
    if output in (Format.JSON, Format.YAML):
        dump(data, output)
        return
    if not data["traces"] and not data.get("tracing", {}).get("enabled", True):
        console.print("no traces: the sidecars have no tracer (start the control plane "
                      "with --trace-sampling PERCENT, e.g. 1)")
        return
    multi = any("clusters" in t for t in data["traces"])  # multi-cluster: where its spans are
    table(("trace id", "root", "services", "spans", "errors", "duration",
           *(("clusters",) if multi else ())),
          [[t["trace_id"], t["root"], ",".join(t["services"]), t["spans"], t["errors"],
            f"{t['duration_ms']:.2f}ms", *([",".join(t.get("clusters", []))] if multi else [])]
           for t in data["traces"]], title="traces")
