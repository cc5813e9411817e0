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

SKIP_CLUSTERS = ("xds_cluster", "sds-grpc")  # bootstrap plumbing, not the request path
NAMING = {"name", "stat_prefix", "rds", "route_config", "load_assignment", "eds_cluster_config",
          "@type", "cluster", "http_filters", "type", "connect_timeout"}
LISTENER_NAMING = {"address", "filter_chains", "listener_filters"}


def config_dump(admin_port: int, include_eds: bool = False) -> dict[str, Any]:
    params = {"include_eds": ""} if include_eds else {}
    r = httpx.get(f"http://127.0.0.1:{admin_port}/config_dump", params=params, timeout=10,
                  trust_env=False)
    r.raise_for_status()
    return r.json()


def counter(admin_port: int, name: str) -> int:
    """One counter from an Envoy's admin ``/stats`` (0 if absent)."""
    r = httpx.get(f"http://127.0.0.1:{admin_port}/stats", timeout=10, trust_env=False)
    r.raise_for_status()
    for line in r.text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


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
    out: dict[str, set[str]] = {"listener": set(), "hcm": set(), "cluster": set(),
                                "route": set(), "filters": set()}
    for d in _walk(dump.get("configs", [])):
        t = str(d.get("@type", ""))
        if "filter_chains" in d and "address" in d:
            out["listener"] |= {k for k in d if k not in NAMING | LISTENER_NAMING}
            for chain in d["filter_chains"]:
                out["listener"] |= {f"filter_chain.{k}" for k in chain
                                    if k not in ("filters", "name")}
            out["listener"] |= {f"listener_filter {f.get('name', '?')}"
                                for f in d.get("listener_filters", [])}
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
    for kind in ("listener", "hcm", "filters", "route", "cluster"):
        only_shoal = sorted(shoal.get(kind, set()) - pair.get(kind, set()))
        only_pair = sorted(pair.get(kind, set()) - shoal.get(kind, set()))
        if only_shoal:
            lines.append(f"{kind}: only in shoal: {', '.join(only_shoal)}")
        if only_pair:
            lines.append(f"{kind}: only in hand-written: {', '.join(only_pair)}")
    return lines
