"""`shoal proxy-status` and `shoal proxy-config`: what each sidecar has, istioctl style."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table
from shoal.control.proxies import CONFIG_TYPES

TYPE_COLUMNS = ("CDS", "EDS", "LDS", "RDS")


def _type_state(t: dict[str, Any]) -> str:
    if t.get("nack"):
        return "NACKED"
    if t.get("acked_version") and t.get("acked_version") == t.get("want_version"):
        return "SYNCED"
    return "STALE"


def status_rows(proxies: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for p in proxies:
        by_type = {t["type"]: t for t in p.get("types", [])}
        state = p.get("sync", "?") if p.get("connected", True) else "DISCONNECTED"
        rows.append([p["node_id"], state,
                     *(_type_state(by_type[c]) if c in by_type else "-" for c in TYPE_COLUMNS),
                     p.get("flavour", "")])
    return rows


def proxy_status(ctx: typer.Context,
                 output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE
                 ) -> None:
    """Sync state of every connected sidecar: SYNCED, STALE or NACKED, per xDS type."""
    client: ApiClient = ctx.obj()
    with client:
        proxies = client.proxies()
    if output in (Format.YAML, Format.JSON):
        dump(proxies, output)
        return
    table(["name", "status", *TYPE_COLUMNS, "stream"], status_rows(proxies),
          title="proxies")
    for p in proxies:
        for t in p.get("types", []):
            if t.get("nack"):
                console.print(f"[red]{p['node_id']} {t['type']} NACK[/red] of version "
                              f"{t['nack']['version']}: {t['nack']['message']}")


def proxy_config(ctx: typer.Context,
                 name: Annotated[str, typer.Argument(help="Proxy node id or workload name.")],
                 kind: Annotated[str | None, typer.Argument(
                     help=f"One of: {', '.join(CONFIG_TYPES)} (default: all).")] = None,
                 output: Annotated[Format, typer.Option("--output", "-o")] = Format.TABLE
                 ) -> None:
    """The live Envoy config of one sidecar (read from its admin API), by resource type."""
    client: ApiClient = ctx.obj()
    with client:
        dumped = client.proxy_config(name, kind)
    if output in (Format.YAML, Format.JSON):
        dump(dumped, output)
        return
    rows = []
    for section in dumped["configs"]:
        section_type = section.get("@type", "").rsplit(".", 1)[-1].removesuffix("ConfigDump")
        for entry in _entries(section):
            rows.append([section_type.lower(), *entry])
    table(["type", "name", "version", "detail"], rows, title=f"config of {dumped['node_id']}")


def _entries(section: dict[str, Any]) -> list[list[str]]:
    out = []
    for key in ("dynamic_listeners", "dynamic_active_clusters", "dynamic_route_configs",
                "dynamic_endpoint_configs", "dynamic_active_secrets", "static_clusters"):
        for item in section.get(key, []):
            inner = (item.get("active_state") or item)
            res = inner.get("listener") or inner.get("cluster") or inner.get("route_config") \
                or inner.get("endpoint_config") or inner.get("secret") or {}
            name = res.get("name") or res.get("cluster_name") or item.get("name", "")
            out.append([name, inner.get("version_info", ""), _detail(res)])
    for item in section.get("dynamic_scoped_route_configs", []):  # outbound_http's scopes
        scopes = item.get("scoped_route_configs", [])
        out.append([item.get("name", ""), item.get("version_info", ""),
                    f"{len(scopes)} scopes (Host header -> route configuration)"])
    return out


def _detail(res: dict[str, Any]) -> str:
    if "address" in res:
        sa = res["address"].get("socket_address", {})
        return f"{sa.get('address')}:{sa.get('port_value')}"
    if "virtual_hosts" in res:
        return f"{len(res['virtual_hosts'])} virtual hosts"
    if "endpoints" in res:
        n = sum(len(e.get("lb_endpoints", [])) for e in res["endpoints"])
        return f"{n} endpoints"
    if "type" in res or "eds_cluster_config" in res:
        return res.get("type", "EDS")
    return ""
