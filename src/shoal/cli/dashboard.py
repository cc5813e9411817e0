"""`shoal dashboard`: the web UI of the control plane (prints its URL, opens a browser)."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from shoal.cli.client import ApiClient
from shoal.errors import Unavailable


def dashboard(ctx: typer.Context,
              open_browser: Annotated[bool, typer.Option(
                  "--open/--no-open", help="Open it in the default browser.")] = True
              ) -> None:
    """Print the dashboard's URL and open it (the control plane serves it at /ui/)."""
    client: ApiClient = ctx.obj()
    with client:
        if not client.ready():
            raise Unavailable(f"the control plane at {client.base_url} is not ready; "
                              "is it running? (`shoal up` starts one)")
        url = f"{client.base_url}/ui/"
    typer.echo(url)
    if open_browser:
        webbrowser.open(url)
