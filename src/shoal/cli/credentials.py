"""Where the CLI finds its operator credential for a control plane (like a kubeconfig).

In order: ``$SHOAL_API_TOKEN`` (the token itself), ``$SHOAL_API_TOKEN_FILE`` (a file
holding it), the entry for the control plane's URL in ``$SHOAL_HOME/credentials``
(JSON ``{"servers": {URL: {"tokenFile": PATH}}}``, 0600, written by ``shoal up``), and
finally ``$SHOAL_HOME/data/admin.token``, the mesh-admin token a control plane started
with the default data directory keeps for its user. Token files are re-read on use, so
a renewed token is picked up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shoal.errors import ValidationError, Violation


def shoal_home() -> Path:
    return Path(os.environ.get("SHOAL_HOME", Path.home() / ".shoal"))


def credentials_path(home: Path | None = None) -> Path:
    return (home or shoal_home()) / "credentials"


def _servers(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    servers = data.get("servers") if isinstance(data, dict) else None
    return servers if isinstance(servers, dict) else {}


def remember(url: str, token_file: Path, home: Path | None = None) -> None:
    """Record that URL's credential is in TOKEN_FILE (``shoal up`` does, per cluster)."""
    path = credentials_path(home)
    servers = _servers(path)
    servers[url.rstrip("/")] = {"tokenFile": str(token_file)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"servers": servers}, f, indent=2)
    tmp.replace(path)


def token_file_for(url: str, home: Path | None = None) -> Path:
    """The file that should hold URL's credential (it may not exist yet)."""
    if env := os.environ.get("SHOAL_API_TOKEN_FILE"):
        return Path(env)
    entry = _servers(credentials_path(home)).get(url.rstrip("/"), {})
    if isinstance(entry, dict) and isinstance(entry.get("tokenFile"), str):
        return Path(entry["tokenFile"])
    return (home or shoal_home()) / "data" / "admin.token"


def token_for(url: str, home: Path | None = None) -> str | None:
    """URL's operator token, or None when none is configured."""
    if env := os.environ.get("SHOAL_API_TOKEN"):
        return env.strip()
    path = token_file_for(url, home)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValidationError([Violation("", f"cannot read the operator credential {path}: "
                                             f"{e.strerror}")]) from None
    return text or None
