"""`shoal prometheus config`: a Prometheus configuration for the mesh.

Two modes (docs/observability.md, docs/adr/0028):

* ``control-plane`` (default): scrape the control plane's ``/metrics``, where every
  proxy's counters arrive through the agents' reports. One target; fine for small meshes.
* ``workloads`` (at scale, Istio's convention): scrape every workload's own metrics
  endpoint, found through ``http_sd_configs`` on the control plane, over mTLS as the
  scraper identity ``<root namespace>/prometheus``; the control plane's ``/metrics`` is
  still scraped, for its own ``shoal_*`` metrics only.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.ca import pki
from shoal.ca.csr import make_csr
from shoal.ca.files import write_private
from shoal.ca.setup import parse_ttl
from shoal.cli.client import ApiClient
from shoal.cli.credentials import shoal_home
from shoal.control.operators import write_private_text
from shoal.registry.snapshot import MeshConfig
from shoal.telemetry.prometheus import scrape_config
from shoal.telemetry.scrape import SCRAPER_SERVICE_ACCOUNT, ScrapeFiles, workloads_scrape_config

app = typer.Typer(help="Prometheus integration.", no_args_is_help=True)
# The workload token that obtains the scraper's certificate is used once, at once.
BOOTSTRAP_TOKEN_TTL = 300


class Mode(StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKLOADS = "workloads"


def mint_operator_token(client: ApiClient, path: Path, ttl: str) -> None:
    """A ``view:*`` token for user ``prometheus`` into PATH (0600)."""
    answer = client.request("POST", "/api/v1/tokens", json={
        "user": "prometheus", "grants": ["view:*"],
        "ttlSeconds": parse_ttl(ttl, "--ttl")})
    write_private_text(path, answer["token"] + "\n")
    typer.echo(f"# token {answer['id']} (view:*) written to {path}", err=True)


def mint_scraper_certificate(client: ApiClient, files: ScrapeFiles) -> dict[str, Any]:
    """The scraper's workload certificate, obtained as any workload obtains one: a
    short-lived workload token for ``<root namespace>/prometheus`` (minted by the
    caller, who must be admin there), then a CSR for its SPIFFE ID signed with it. The
    key is made here and written 0600 with the chain and the mesh roots."""
    token = client.request("POST", "/api/v1/tokens", json={
        "namespace": MeshConfig.root_namespace, "serviceAccount": SCRAPER_SERVICE_ACCOUNT,
        "ttlSeconds": BOOTSTRAP_TOKEN_TTL})
    key = pki.new_key()
    with ApiClient(client.base_url, headers={"Authorization": f"Bearer {token['token']}"}
                   ) as workload:
        issued = workload.request("POST", "/api/v1/certificates", json={
            "csr": make_csr(key, token["spiffeId"]), "workload": SCRAPER_SERVICE_ACCOUNT})
    write_private(Path(files.key), pki.key_pem(key))
    write_private(Path(files.cert), "".join(issued["certChain"]).encode())
    write_private(Path(files.ca), "".join(issued["trustBundle"]).encode())
    return dict(issued)


def _private_dir(path: Path) -> Path:
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
    return path


@app.command("config")
def config(
    ctx: typer.Context,
    mode: Annotated[Mode, typer.Option(
        help="control-plane: scrape the control plane's /metrics (every proxy's counters "
             "arrive there). workloads: scrape each workload's own endpoint over mTLS, "
             "found through http_sd on the control plane (at scale).")
    ] = Mode.CONTROL_PLANE,
    interval: Annotated[str, typer.Option(help="scrape_interval")] = "5s",
    job: Annotated[str, typer.Option(help="job_name of the control plane")] = "shoal",
    credentials_file: Annotated[Path | None, typer.Option(
        help="Where Prometheus reads its bearer token (default: "
             "$SHOAL_HOME/prometheus.token; with --mode workloads DIR/token). It must be "
             "readable by Prometheus.")] = None,
    ttl: Annotated[str, typer.Option(
        help="Lifetime of the token minted for Prometheus (at most 30d); run the command "
             "again before it ends.")] = "30d",
    mint: Annotated[bool, typer.Option(
        "--mint/--no-mint", help="Mint a view:* token for user 'prometheus' into "
        "--credentials-file (needs the mesh admin), and with --mode workloads the scraper's "
        "certificate into --dir; --no-mint: only print the config.")
    ] = True,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="--mode workloads: where the scraper's certificate, key and the mesh "
        "roots are written, 0600 (default: $SHOAL_HOME/prometheus). Prometheus must be "
        "able to read them.")] = None,
    refresh_interval: Annotated[str, typer.Option(
        help="--mode workloads: how often Prometheus asks the control plane for the "
             "workloads (http_sd refresh_interval)")] = "30s",
) -> None:
    """Print a prometheus.yml for the mesh (see --mode). Prometheus gets view-only
    operator access of its own (the operator API needs a credential on every route)."""
    client: ApiClient = ctx.obj()
    if mode is Mode.CONTROL_PLANE:
        path = (credentials_file or shoal_home() / "prometheus.token").absolute()
        if mint:
            with client:
                mint_operator_token(client, path, ttl)
        typer.echo(scrape_config(client.base_url, interval=interval, job=job,
                                 credentials_file=str(path)), nl=False)
        return
    where = (directory or shoal_home() / "prometheus").absolute()
    files = ScrapeFiles(token=str((credentials_file or where / "token").absolute()),
                        ca=str(where / "ca.pem"), cert=str(where / "cert.pem"),
                        key=str(where / "key.pem"))
    if mint:
        _private_dir(where)
        with client:
            mint_operator_token(client, Path(files.token), ttl)
            issued = mint_scraper_certificate(client, files)
        left = dt.datetime.fromisoformat(issued["expiresAt"]) - pki.now()
        typer.echo(f"# certificate {issued['spiffeId']} written to {where} (expires "
                   f"{issued['expiresAt']}, in {left.total_seconds() / 3600:.1f} h): run "
                   "this command again before then; Prometheus re-reads the files", err=True)
    typer.echo(workloads_scrape_config(client.base_url, files, interval=interval,
                                       refresh=refresh_interval, job=job), nl=False)
