"""Rewrite one section of docs/benchmarks.md, between ``<!-- bench:NAME -->`` markers."""

from __future__ import annotations

from pathlib import Path

HEADER = "# Benchmarks\n\n(Run `make bench`; see bench/run.py.)\n"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def rewrite_section(doc: Path, name: str, body: str) -> None:
    """Replace the section ``name`` (appended at the end if the file lacks it)."""
    text = doc.read_text() if doc.exists() else HEADER
    start, end = markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
