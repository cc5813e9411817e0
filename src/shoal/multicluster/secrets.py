"""Remote secrets: how a control plane reaches a remote cluster's control plane.

Like Istio's remote secret (a kubeconfig in a Secret): a name, the remote control
plane's URL, a token the remote control plane issued for reading its discovery stream,
and optionally the remote's network (otherwise the remote says which it is). Kept in
``<data-dir>/remote-clusters.json`` (0600: it holds tokens), not in the config store:
each control plane decides whom it follows.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shoal.errors import ValidationError, Violation

FILE_NAME = "remote-clusters.json"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: The identity a remote secret's token is for (namespace = the mesh root namespace).
#: Reserved: it reads the discovery routes and nothing else -- no certificate, no
#: registration (shoal.registry.admission, docs/adr/0021).
READER_SERVICE_ACCOUNT = "cluster-reader"


@dataclass(frozen=True)
class RemoteSecret:
    name: str  # the remote cluster's name (its control plane's --cluster)
    url: str  # its REST API, https:// (verified against the mesh roots) or http://
    token: str = ""  # Bearer token for its discovery stream
    network: str = ""  # override the network the remote reports

    @staticmethod
    def parse(doc: Any) -> RemoteSecret:
        problems = []
        if not isinstance(doc, dict):
            raise ValidationError([Violation("", "a remote secret is an object")])
        name, url = doc.get("name"), doc.get("url")
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > 63:
            problems.append(Violation("name", "must be a DNS label (a-z, 0-9, -)"))
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append(Violation("url", "must be an http:// or https:// URL"))
        for f in ("token", "network"):
            if not isinstance(doc.get(f, ""), str):
                problems.append(Violation(f, "must be a string"))
        if unknown := set(doc) - {"name", "url", "token", "network"}:
            problems += [Violation(f, "unknown field") for f in sorted(unknown)]
        if problems:
            raise ValidationError(problems)
        return RemoteSecret(name, url.rstrip("/"), doc.get("token", ""), doc.get("network", ""))

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def public(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url, "network": self.network,
                "token": "<set>" if self.token else ""}


def load(directory: Path) -> list[RemoteSecret]:
    path = directory / FILE_NAME
    if not path.exists():
        return []
    return [RemoteSecret.parse(d) for d in json.loads(path.read_text())]


def save(directory: Path, secrets: list[RemoteSecret]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (FILE_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump([s.to_json() for s in sorted(secrets, key=lambda s: s.name)], f, indent=2)
    os.replace(tmp, directory / FILE_NAME)
