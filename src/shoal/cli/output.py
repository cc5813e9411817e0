"""Printing: tables for people, YAML/JSON for programs (-o yaml|json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table


class Format(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    YAML = "yaml"
    JSON = "json"


# Piped output is not wrapped at 80 columns: it is for grep and friends.
console = Console(width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True)


def dump(data: Any, fmt: Format) -> None:
    if fmt is Format.JSON:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None
          ) -> None:
    if not rows:
        console.print(f"No {title or 'items'} found.")
        return
    t = Table(title=title, box=None, header_style="bold", pad_edge=False, show_edge=False)
    for c in columns:
        t.add_column(c.upper(), overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)
