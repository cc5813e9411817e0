"""`shoal apply`, `shoal get`, `shoal delete`: config resources, kubectl style."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.api import load_documents, parse_documents, resolve_kind
from shoal.cli.certs import show_certs
from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, table
from shoal.cli.rollout import wait_rollout
from shoal.errors import NotFound, ValidationError, Violation

FileOpt = Annotated[list[Path], typer.Option("--filename", "-f",
                                             help="YAML file or directory ('-' = stdin).")]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n",
                                                  help="Namespace (default: all for get).")]
OutputOpt = Annotated[Format, typer.Option("--output", "-o", help="Output format.")]


def _read(paths: list[Path]) -> list[tuple[str, str]]:
    out = []
    for p in paths:
        if str(p) == "-":
            out.append(("stdin", sys.stdin.read()))
        elif p.is_dir():
            out += [(str(f), f.read_text()) for f in sorted(p.glob("*.y*ml"))]
        elif p.exists():
            out.append((str(p), p.read_text()))
        else:
            raise NotFound(f"{p}: no such file")
    return out


def apply(ctx: typer.Context, filename: FileOpt,
          dry_run: Annotated[bool, typer.Option("--dry-run",
                             help="Validate on the server, store nothing.")] = False,
          wait: Annotated[bool, typer.Option(
              "--wait", help="Then wait until every connected proxy is SYNCED with it "
              "(fails at once on a NACK).")] = False,
          timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 60.0,
          ) -> None:
    """Create or update resources from YAML files (all documents, or none, are applied)."""
    if not filename:
        raise typer.BadParameter("give at least one -f FILE", param_hint="-f")
    files = _read(filename)
    # Validate every file locally first, so that one bad file stops the whole apply with
    # every violation of every file listed.
    problems: list[Violation] = []
    texts = []
    for source, text in files:
        try:
            parse_documents(load_documents(text, source), source)
            texts.append(text)
        except ValidationError as e:
            problems += e.violations
    if problems:
        raise ValidationError(problems)
    combined = "\n---\n".join(texts)
    client: ApiClient = ctx.obj()
    with client:
        result = client.apply(combined, source=", ".join(s for s, _ in files), dry_run=dry_run)
        for r in result["results"]:
            suffix = " (dry run)" if dry_run else ""
            console.print(f"{r['kind'].lower()}/{r['name']} ({r['namespace']}) "
                          f"{r['outcome']}{suffix}")
        if wait and not dry_run:
            done = wait_rollout(client, int(result["revision"]), timeout=timeout)
            n = len(done.proxies)
            console.print(f"revision {result['revision']} synced on {n} "
                          f"prox{'y' if n == 1 else 'ies'}")


def _row(r: dict[str, Any]) -> list[Any]:
    spec = r.get("spec", {})
    kind = r["kind"]
    meta = r["metadata"]
    if kind == "Service":
        detail = ",".join(f"{p['name']}:{p['port']}/{p.get('protocol', 'http')}"
                          for p in spec.get("ports", []))
    elif kind == "Workload":
        ports = ",".join(f"{k}:{v}" for k, v in spec.get("ports", {}).items())
        labels = ",".join(f"{k}={v}" for k, v in spec.get("labels", {}).items())
        detail = f"{spec.get('address')} {ports} {labels}"
    elif kind == "VirtualService":
        detail = "hosts=" + ",".join(spec.get("hosts", []))
    elif kind == "DestinationRule":
        detail = f"host={spec.get('host')} subsets=" + ",".join(
            s["name"] for s in spec.get("subsets", []))
    else:
        detail = ""
    return [meta["namespace"], meta["name"], detail, meta.get("resourceVersion", "")]


def get(ctx: typer.Context,
        kind: Annotated[str, typer.Argument(
            help="Kind, plural or short name (svc, wl, vs, dr, pa, ap, ra, slo), or certs.")],
        name: Annotated[str | None, typer.Argument(help="Resource name.")] = None,
        namespace: NamespaceOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """List resources of a kind, or show one. `get certs WORKLOAD` shows its identity."""
    client: ApiClient = ctx.obj()
    if kind.lower() in ("cert", "certs", "certificates"):
        if not name:
            raise typer.BadParameter("name the workload: shoal get certs WORKLOAD",
                                     param_hint="NAME")
        with client:
            show_certs(client, namespace or "default", name, output)
        return
    k = resolve_kind(kind)
    with client:
        if name:
            items = [client.get(k.name, namespace or "default", name)]
        else:
            items = client.list(k.name, namespace)["items"]
    if output in (Format.YAML, Format.JSON):
        dump(items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}, output)
        return
    table(["namespace", "name", "details", "revision"], [_row(r) for r in items],
          title=k.plural)


def delete(ctx: typer.Context,
           kind: Annotated[str | None, typer.Argument(help="Kind, plural or short name.")] = None,
           names: Annotated[list[str] | None, typer.Argument(help="Resource names.")] = None,
           namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
           filename: FileOpt = None) -> None:  # type: ignore[assignment]
    """Delete resources by name (or every resource named in -f files)."""
    client: ApiClient = ctx.obj()
    keys: list[tuple[str, str, str]] = []
    if filename:
        for source, text in _read(filename):
            keys += [(r.kind, r.metadata.namespace, r.metadata.name)
                     for r in parse_documents(load_documents(text, source), source)]
    elif kind:
        k = resolve_kind(kind)
        keys += [(k.name, namespace, n) for n in names or []]
    if not keys:
        raise typer.BadParameter("name at least one resource", param_hint="NAMES")
    with client:
        for kind_name, ns, n in keys:
            client.delete(kind_name, ns, n)
            console.print(f"{kind_name.lower()}/{n} ({ns}) deleted")
