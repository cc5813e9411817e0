"""``shoal analyze``: report config that cannot work (exit 1 when there are findings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.analyze import analyze as run_checks
from shoal.api import load_documents, parse_documents
from shoal.api.meshconfig import ExtensionProvider
from shoal.api.meta import Resource, ResourceKey
from shoal.api.parse import load_resource
from shoal.cli.client import ApiClient
from shoal.cli.output import Format, dump
from shoal.cli.resources import _read
from shoal.registry.snapshot import MeshConfig


def mesh_config(body: dict[str, Any]) -> MeshConfig:
    """The control plane's mesh-wide settings (``GET /api/v1/meshconfig``)."""
    return MeshConfig(
        root_namespace=body["rootNamespace"], istio_root_namespace=body["istioRootNamespace"],
        trust_domain=body["trustDomain"], domain=body["domain"],
        extension_providers=tuple(ExtensionProvider.model_validate(p)
                                  for p in body["extensionProviders"]))


def analyze(
    ctx: typer.Context,
    filename: Annotated[list[Path] | None, typer.Option(
        "--filename", "-f", help="YAML file or directory to analyze as if applied.")] = None,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Only the files: do not read the control plane's config.")] = False,
    output: Annotated[Format, typer.Option("--output", "-o", help="table, json or yaml.")
                      ] = Format.TABLE,
) -> None:
    """Check the control plane's config plus -f files for references that cannot work:
    unknown hosts, subsets and gateways, competing VirtualServices, empty selectors."""
    resources: list[Resource] = []
    config = None
    if not offline:
        client: ApiClient = ctx.obj()
        with client:
            resources += [load_resource(d) for d in client.list()["items"]]
            config = mesh_config(client.mesh_config())
    sources: dict[ResourceKey, str] = {}
    for source, text in _read(filename or []):
        for r in parse_documents(load_documents(text, source), source):
            resources.append(r)
            sources[r.key] = source
    findings = run_checks(resources, sources, config)
    if output in (Format.JSON, Format.YAML):
        dump({"findings": [f.to_dict() for f in findings]}, output)
    elif findings:
        for f in findings:
            typer.echo(str(f))
    else:
        typer.echo("No problems found.")
    raise typer.Exit(1 if findings else 0)
