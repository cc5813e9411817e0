"""`shoal apply`, `shoal get`, `shoal delete`: config resources, kubectl style."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.api import in_namespace, load_documents, parse_documents, resolve_kind
from shoal.cli.certs import show_certs
from shoal.cli.client import ApiClient
from shoal.cli.output import Format, console, dump, err_console, table
from shoal.cli.rollout import wait_rollout
from shoal.errors import NotFound, ValidationError, Violation

FileOpt = Annotated[list[Path], typer.Option("--filename", "-f",
                                             help="YAML file or directory ('-' = stdin).")]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n",
                                                  help="Namespace (default: all for get).")]
FileNamespaceOpt = Annotated[str | None, typer.Option(
    "--namespace", "-n", help="Namespace of documents that name none (default: default); "
    "a document naming another namespace is an error, as with kubectl.")]
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
          namespace: FileNamespaceOpt = None,
          ) -> None:
    """Create or update resources from YAML files, directories or stdin (-f -); all
    documents, or none, are applied."""
    if not filename:
        raise typer.BadParameter("give at least one -f FILE", param_hint="-f")
    files = _read(filename)
    # Validate every file locally first, so that one bad file stops the whole apply with
    # every violation of every file listed.
    problems: list[Violation] = []
    texts = []
    for source, text in files:
        try:
            docs = load_documents(text, source)
            parse_documents(in_namespace(docs, namespace, source) if namespace else docs,
                            source)
            texts.append(text)
        except ValidationError as e:
            problems += e.violations
    if problems:
        raise ValidationError(problems)
    combined = "\n---\n".join(texts)
    client: ApiClient = ctx.obj()
    with client:
        result = client.apply(combined, source=", ".join(s for s, _ in files), dry_run=dry_run,
                              namespace=namespace)
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
            help="Kind, plural or short name (svc, wl, vs, dr, pa, ap, ra, slo, gtw), "
            "group-qualified as kubectl takes it (gateways.gateway.networking.k8s.io), "
            "or certs.")],
        name: Annotated[str | None, typer.Argument(help="Resource name.")] = None,
        namespace: NamespaceOpt = None, output: OutputOpt = Format.TABLE,
        all_namespaces: Annotated[bool, typer.Option(
            "--all-namespaces", "-A", help="Every namespace (the default without -n).")
        ] = False,
        selector: Annotated[str | None, typer.Option(
            "--selector", "-l", help="Only resources whose labels match: key=value, "
            "key!=value, key, !key, comma-separated (all must hold).")] = None,
        ) -> None:
    """List resources of a kind, or show one. `get certs WORKLOAD` shows its identity."""
    if all_namespaces:
        if name:
            raise typer.BadParameter("a name and --all-namespaces do not go together",
                                     param_hint="-A")
        namespace = None
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
            items = client.list(k.name, namespace, selector)["items"]
    if output in (Format.YAML, Format.JSON):
        dump(items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}, output)
        return
    table(["namespace", "name", "details", "revision"], [_row(r) for r in items],
          title=k.qualified if "." in k.name else k.plural)


def delete(ctx: typer.Context,
           kind: Annotated[str | None, typer.Argument(help="Kind, plural or short name.")] = None,
           names: Annotated[list[str] | None, typer.Argument(help="Resource names.")] = None,
           namespace: FileNamespaceOpt = None,
           filename: FileOpt = None,  # type: ignore[assignment]
           ignore_not_found: Annotated[bool, typer.Option(
               "--ignore-not-found", help="A resource that does not exist is not an error.")
           ] = False) -> None:
    """Delete resources by name (or every resource named in -f files). Like kubectl, every
    resource is tried; those not found are reported (unless --ignore-not-found) and make
    the command fail at the end."""
    client: ApiClient = ctx.obj()
    keys: list[tuple[str, str, str]] = []
    if filename:
        for source, text in _read(filename):
            docs = load_documents(text, source)
            keys += [(r.kind, r.metadata.namespace, r.metadata.name)
                     for r in parse_documents(in_namespace(docs, namespace, source)
                                              if namespace else docs, source)]
    elif kind:
        k = resolve_kind(kind)
        keys += [(k.name, namespace or "default", n) for n in names or []]
    if not keys:
        raise typer.BadParameter("name at least one resource", param_hint="NAMES")
    missing = 0
    with client:
        for kind_name, ns, n in keys:
            try:
                client.delete(kind_name, ns, n)
            except NotFound:
                if not ignore_not_found:
                    missing += 1
                    err_console.print(f"error: {kind_name.lower()}/{n} ({ns}) not found")
                continue
            console.print(f"{kind_name.lower()}/{n} ({ns}) deleted")
    if missing:
        raise typer.Exit(1)
