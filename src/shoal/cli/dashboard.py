"""`shoal dashboard`: the web UI of the control plane (prints its URL, opens a browser)."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from shoal.cli.client import ApiClient
from shoal.cli.credentials import token_for
from shoal.cli.output import err_console
from shoal.errors import Unavailable


def dashboard(ctx: typer.Context,
              open_browser: Annotated[bool, typer.Option(
                  "--open/--no-open", help="Open it in the default browser, signed in.")
              ] = True,
              show_token: Annotated[bool, typer.Option(
                  "--show-token", help="Print the URL with your token in its fragment "
                  "(#token=...), to open it signed in elsewhere. Keep it secret.")] = False,
              ) -> None:
    """Print the dashboard's URL and open it signed in with your operator credential
    (the control plane serves it at /ui/; the token travels in the URL fragment, which
    the browser never sends to a server)."""
    client: ApiClient = ctx.obj()
    with client:
        if not client.ready():
            raise Unavailable(f"the control plane at {client.base_url} is not ready; "
                              "is it running? (`shoal up` starts one)")
        url = f"{client.base_url}/ui/"
        token = token_for(client.base_url)
        whoami = client.request("GET", "/api/v1/whoami") if token else None
    signed_in = f"{url}#token={token}" if token else url
    typer.echo(signed_in if show_token else url)
    if whoami is None:
        err_console.print("no operator credential found: the dashboard will ask for a token")
    if open_browser:
        webbrowser.open(signed_in)
