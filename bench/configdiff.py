"""Compare the sidecars' generated config (admin /config_dump) with the hand-written pair.

Feature extraction is generic: for every HTTP connection manager, cluster and route
action on the request path, which fields are set (and the HTTP filters in order). The
difference "set in shoal, not in the hand-written pair" is what may cost latency.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

SKIP_CLUSTERS = ("xds_cluster",)
NAMING = {"name", "stat_prefix", "rds", "route_config", "load_assignment", "eds_cluster_config",
          "@type", "cluster", "http_filters", "type", "connect_timeout"}


def config_dump(admin_port: int) -> dict[str, Any]:
    r = httpx.get(f"http://127.0.0.1:{admin_port}/config_dump", timeout=10, trust_env=False)
    r.raise_for_status()
    return r.json()


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def features(dump: dict[str, Any]) -> dict[str, set[str]]:
    """{"hcm": {...}, "cluster": {...}, "route": {...}, "filters": {...}} of set fields."""
    out: dict[str, set[str]] = {"hcm": set(), "cluster": set(), "route": set(),
                                "filters": set()}
    for d in _walk(dump.get("configs", [])):
        t = str(d.get("@type", ""))
        if t.endswith("HttpConnectionManager"):
            out["hcm"] |= {f"{k}={_short(v)}" if k == "codec_type" else k
                           for k, v in d.items() if k not in NAMING}
            out["filters"].add(" > ".join(f.get("name", "?") for f in d.get("http_filters", [])))
        elif t.endswith("ClustersConfigDump"):
            for entry in (*d.get("static_clusters", []), *d.get("dynamic_active_clusters", [])):
                c = entry.get("cluster", {})
                if c.get("name") in SKIP_CLUSTERS:
                    continue
                out["cluster"] |= {k for k in c if k not in NAMING}
                for opt in (c.get("typed_extension_protocol_options") or {}).values():
                    cfg = opt.get("explicit_http_config", {})
                    out["cluster"] |= {f"upstream {k}" for k in cfg}
        elif "route" in d and isinstance(d["route"], dict) and "match" in d:
            out["route"] |= {k for k in d["route"] if k not in NAMING}
            out["route"] |= {f"route.{k}" for k in d if k not in ("match", "route", "name")}
    return out


def _short(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def compare_configs(shoal_admin: list[int], pair_admin: list[int],
                    save_to: Path | None = None) -> list[str]:
    """Lines "<kind>: only in shoal: ...", "<kind>: only in hand-written: ..."."""
    shoal: dict[str, set[str]] = {}
    pair: dict[str, set[str]] = {}
    for ports, acc, label in ((shoal_admin, shoal, "shoal"), (pair_admin, pair, "pair")):
        for i, port in enumerate(ports):
            dump = config_dump(port)
            if save_to is not None:
                save_to.mkdir(parents=True, exist_ok=True)
                (save_to / f"{label}-{i}.json").write_text(json.dumps(dump, indent=1))
            for k, v in features(dump).items():
                acc.setdefault(k, set()).update(v)
    lines = []
    for kind in ("hcm", "filters", "route", "cluster"):
        only_shoal = sorted(shoal.get(kind, set()) - pair.get(kind, set()))
        only_pair = sorted(pair.get(kind, set()) - shoal.get(kind, set()))
        if only_shoal:
            lines.append(f"{kind}: only in shoal: {', '.join(only_shoal)}")
        if only_pair:
            lines.append(f"{kind}: only in hand-written: {', '.join(only_pair)}")
    return lines
