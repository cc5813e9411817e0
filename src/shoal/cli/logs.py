"""`shoal logs SERVICE`: the access-log lines of the service's sidecars (both directions),
oldest first; ``-f`` keeps following. The control plane reads them from the workloads'
agents (all replicas, merged by time), or from what the sidecars streamed to it with
``--access-log-stream``; either way it returns a cursor to follow with."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from shoal.cli.client import ApiClient


def format_line(e: dict[str, Any]) -> str:
    """One human line: time, direction, method path, status, flags, duration, peer."""
    arrow = "->" if e.get("direction") == "outbound" else "<-"
    peer = (e.get("destination_service") or e.get("authority") or "-") \
        if e.get("direction") == "outbound" else (e.get("source_principal")
                                                  or e.get("downstream_remote") or "-")
    what = f"{e.get('method', '')} {e.get('path', '')}".strip() or e.get("kind", "tcp")
    flags = e.get("response_flags") or "-"
    status = e.get("status") if e.get("status") is not None else "-"
    return (f"{e.get('start_time', '')} {e.get('reporter', '')} {arrow} {peer} {what} "
            f"{status} {flags} {e.get('duration_ms', '-')}ms "
            f"{'mtls ' if e.get('mtls') else ''}id={e.get('request_id') or '-'} "
            f"trace={e.get('trace_id') or '-'}")


WAIT = 25.0  # seconds of each long poll while following (the control plane's cap: 30)


def _note_unreachable(page: dict[str, Any], told: set[str]) -> set[str]:
    """A note on stderr for each workload that did not answer (once while it does not)."""
    now: set[str] = set()
    for u in page.get("unreachable") or []:
        who = f"{u.get('workload', '?')}.{u.get('namespace', '?')}"
        now.add(who)
        if who not in told:
            sys.stderr.write(f"note: {who} did not answer ({u.get('reason', 'unknown')}); "
                             "its lines are missing\n")
    sys.stderr.flush()
    return now


def logs(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="Service name (or name.namespace).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
                      ] = False,
    tail: Annotated[int, typer.Option(help="How many recent lines to show first.")] = 50,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json (one object "
                                                               "per line).")] = "text",
) -> None:
    """Access logs of a service's sidecars (status, response flags, timing, trace id)."""
    if output not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--output")
    client: ApiClient = ctx.obj()
    cursor = ""
    told: set[str] = set()
    params: dict[str, Any] = {"service": service, "tail": tail}
    if namespace:
        params["namespace"] = namespace
    with client:
        while True:
            # a long poll outlasts the client's default timeout
            longer = {"timeout": WAIT + 15} if "wait" in params else {}
            page = client.request("GET", "/api/v1/logs",
                                  params={**params, **({"cursor": cursor} if cursor else {})},
                                  **longer)
            told = _note_unreachable(page, told)
            for e in page["entries"]:
                sys.stdout.write((json.dumps(e) if output == "json" else format_line(e)) + "\n")
            sys.stdout.flush()
            cursor = page.get("cursor") or cursor
            if not follow:
                return
            params = {**params, "tail": 0, "wait": WAIT}
