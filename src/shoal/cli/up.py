"""`shoal up`, `shoal down`, `shoal status`: a whole local mesh with the demo application."""

from __future__ import annotations

import os
import sys
import time
from importlib import resources as pkg_resources
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from shoal.api.meshconfig import load_mesh_config
from shoal.cli.client import ApiClient
from shoal.cli.credentials import remember
from shoal.cli.output import console, err_console, table
from shoal.cli.procs import LocalProcesses, UpState
from shoal.cli.proxies import status_rows
from shoal.cli.serve import default_home
from shoal.control.config import (
    DEFAULT_AGENT_API_PORT,
    DEFAULT_API_PORT,
    DEFAULT_SECURE_XDS_PORT,
    DEFAULT_XDS_PORT,
)
from shoal.demo.topology import WORKLOADS, DemoWorkload, run_args
from shoal.envoy import free_port
from shoal.errors import ShoalError, Unavailable, ValidationError

HomeOpt = Annotated[Path | None, typer.Option(
    "--home", envvar="SHOAL_HOME", help="State directory (default: ~/.shoal).")]


def demo_config() -> str:
    return pkg_resources.files("shoal.demo").joinpath("bookinfo.yaml").read_text()


def _token_file(client: ApiClient, home: Path, namespace: str, service_account: str) -> Path:
    """A token for the workload's identity, in a 0600 file under $SHOAL_HOME/tokens."""
    directory = home / "tokens"
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / f"{namespace}.{service_account}.token"
    token = client.create_token(namespace, service_account, 7 * 24 * 3600)["token"]
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    tmp.replace(path)
    return path


def _agent_argv(w: DemoWorkload, home: Path, api: str, xds: str, product_port: int, *,
                token_file: Path, ca_bundle: Path) -> list[str]:
    argv = [sys.executable, "-m", "shoal", "run", "--control-plane", api, "--xds", xds,
            "--run-dir", str(home / "run" / w.name), "--drain-seconds", "1",
            "--token-file", str(token_file), "--ca-bundle", str(ca_bundle)]
    if w.service == "productpage":
        argv += ["--inbound-port", str(product_port)]
    return argv + run_args(w, app_port=free_port())


def _wait(what: str, check: Any, timeout: float, log_hint: str) -> Any:
    deadline = time.monotonic() + timeout
    last_error = ""
    with console.status(f"{what}..."):
        while time.monotonic() < deadline:
            try:
                result = check()
                if result:
                    return result
            except (ShoalError, httpx.HTTPError) as e:
                last_error = str(e)
            time.sleep(0.2)
    raise Unavailable(f"timed out after {timeout:.0f}s: {what}"
                      f"{f' ({last_error})' if last_error else ''}; see {log_hint}")


def up(
    home: HomeOpt = None,
    api_port: Annotated[int, typer.Option(help="Control plane REST port.")] = DEFAULT_API_PORT,
    xds_port: Annotated[int, typer.Option(help="Control plane xDS port.")] = DEFAULT_XDS_PORT,
    agent_api_port: Annotated[int, typer.Option(
        help="Control plane TLS REST port for agents.")] = DEFAULT_AGENT_API_PORT,
    secure_xds_port: Annotated[int, typer.Option(
        help="Control plane xDS-over-TLS port.")] = DEFAULT_SECURE_XDS_PORT,
    port: Annotated[int, typer.Option(help="Port of the product page (its sidecar).")] = 9080,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for everything.")] = 120.0,
    clusters: Annotated[int, typer.Option(
        min=1, max=2, help="2: the demo over two clusters, each with its own network, "
        "control plane and east-west gateway (needs root; docs/multicluster.md).")] = 1,
    mesh_config: Annotated[Path | None, typer.Option(
        help="Istio mesh configuration YAML for the control plane (its extensionProviders: "
             "external authorizers for AuthorizationPolicy action CUSTOM).")] = None,
) -> None:
    """Start a control plane and the demo application, every workload with its sidecar."""
    home = home or default_home()
    more: list[str] = []
    if mesh_config is not None:
        if clusters > 1:
            raise typer.BadParameter("not with --clusters 2 yet", param_hint="--mesh-config")
        try:
            load_mesh_config(mesh_config)  # refused here, before anything starts
        except ValidationError as e:
            raise typer.BadParameter(str(e), param_hint="--mesh-config") from e
        more = ["--mesh-config", str(mesh_config.resolve())]
    procs = LocalProcesses(home)
    existing = procs.load()
    if existing is not None and existing.api and ApiClient(existing.api).ready():
        console.print(f"shoal is already up (control plane {existing.api}). "
                      f"Product page: {existing.product_page}")
        return
    if existing is not None:
        procs.stop(existing)  # leftovers of an earlier run that did not end cleanly
    if clusters > 1:
        from shoal.cli.up_clusters import down_clusters, up_clusters

        down_clusters(home)  # leftover pods and bridges
        up_clusters(home, clusters, timeout, _wait)
        return
    state = UpState(api=f"http://127.0.0.1:{api_port}",
                    product_page=f"http://127.0.0.1:{port}/productpage")
    xds = f"127.0.0.1:{xds_port}"
    secure_xds = f"127.0.0.1:{secure_xds_port}"
    agent_api = f"https://127.0.0.1:{agent_api_port}"
    ca_bundle = home / "data" / "ca" / "root-cert.pem"
    remember(state.api, home / "data" / "admin.token", home)  # the CLI's credential
    client = ApiClient(state.api)
    try:
        procs.spawn(state, "control-plane", [
            sys.executable, "-m", "shoal", "control-plane", "--api", f"127.0.0.1:{api_port}",
            "--xds", xds, "--data-dir", str(home / "data"),
            "--agent-api", f"127.0.0.1:{agent_api_port}", "--secure-xds", secure_xds,
            # the demo shows every request's trace and its access log
            "--trace-sampling", "100", "--access-log-stream", "--access-log", "all", *more])
        _wait("starting the control plane", client.ready, timeout,
              str(procs.logs / "control-plane.log"))
        client.apply(demo_config(), source="demo/bookinfo.yaml")
        for w in WORKLOADS:
            token_file = _token_file(client, home, "default", w.service_account)
            procs.spawn(state, w.name, _agent_argv(w, home, agent_api, secure_xds, port,
                                                   token_file=token_file, ca_bundle=ca_bundle),
                        env=dict(w.env))

        def all_synced() -> bool:
            proxies = [p for p in client.proxies() if p.get("connected", True)]
            names = {p.get("workload") for p in proxies if p.get("sync") == "SYNCED"}
            return all(w.name in names for w in WORKLOADS)

        _wait(f"starting {len(WORKLOADS)} workloads and their sidecars", all_synced,
              timeout, str(procs.logs))
        _wait("checking the product page", lambda: httpx.get(
            state.product_page, timeout=5).status_code == 200, timeout, str(procs.logs))
    except BaseException:
        err_console.print("[red]shoal up failed; stopping what it started[/red]")
        procs.stop(state)
        raise
    finally:
        client.close()
    console.print(f"[green]shoal is up[/green]: control plane {state.api}, "
                  f"{len(WORKLOADS)} workloads with sidecars.")
    console.print(f"Product page: [bold]{state.product_page}[/bold]")
    console.print(f"Dashboard:    [bold]{state.api}/ui/[/bold] (`shoal dashboard` opens it "
                  "signed in)")
    console.print("Try: shoal status | shoal apply -f samples/reviews-v3.yaml | shoal down")


def down(home: HomeOpt = None) -> None:
    """Stop everything `shoal up` started (agents drain first; no process is left)."""
    home = home or default_home()
    procs = LocalProcesses(home)
    state = procs.load()
    if state is None:
        from shoal.cli.up_clusters import down_clusters

        if down_clusters(home):
            console.print("Removed the pods and networks of the multi-cluster demo.")
        else:
            console.print("Nothing to stop: shoal is not up.")
        return
    stopped = procs.stop(state)
    console.print(f"Stopped {len(stopped)} processes (and their sidecars and apps).")
    from shoal.cli.up_clusters import down_clusters

    if down_clusters(home):
        console.print("Removed the pods and networks of the multi-cluster demo.")


def status(ctx: typer.Context) -> None:
    """Services, workloads and the sync state of each proxy."""
    client: ApiClient = ctx.obj()
    with client:
        services = client.list("Service")["items"]
        workloads = client.list("Workload")["items"]
        proxies = client.proxies()
    table(["namespace", "name", "ports", "selector"], [
        [s["metadata"]["namespace"], s["metadata"]["name"],
         ",".join(f"{p['port']}/{p.get('protocol', 'http')}" for p in s["spec"]["ports"]),
         ",".join(f"{k}={v}" for k, v in s["spec"].get("selector", {}).items())]
        for s in services], title="services")
    console.print()
    table(["namespace", "name", "address", "labels"], [
        [w["metadata"]["namespace"], w["metadata"]["name"],
         ",".join(f"{w['spec']['address']}:{p}" for p in w["spec"].get("ports", {}).values()),
         ",".join(f"{k}={v}" for k, v in w["spec"].get("labels", {}).items())]
        for w in workloads], title="workloads")
    console.print()
    table(["name", "status", "CDS", "EDS", "LDS", "RDS", "stream"],
          status_rows(proxies), title="proxies")
