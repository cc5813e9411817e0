"""YAML/JSON documents -> typed :class:`Resource` objects, reporting every violation.

``parse_documents`` is all-or-nothing: it returns resources only when every document is
valid, and otherwise raises one :class:`ValidationError` listing each problem with the
document it is in and its field path (``spec.http[0].route[1].weight``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pydantic
import yaml

from shoal.api.kinds import KINDS
from shoal.api.meta import Metadata, Resource, ResourceKey
from shoal.errors import ValidationError, Violation

_ENVELOPE = {"apiVersion", "kind", "metadata", "spec"}
_READ_ONLY_IGNORED = {"status"}  # what `get -o yaml` prints may be re-applied


def field_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _pydantic_violations(e: pydantic.ValidationError, prefix: tuple, doc: str) -> list[Violation]:
    out = []
    for err in e.errors():
        # pydantic adds the tag of function validators to the location; drop them
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        out.append(Violation(field_path(prefix + loc), _message(err), doc))
    return out


def load_documents(text: str, source: str = "") -> list[dict[str, Any]]:
    """Split multi-document YAML (JSON is YAML too); empty documents are skipped."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ValidationError([Violation(where, f"invalid YAML: {getattr(e, 'problem', e)}",
                                          source)]) from None
    out = []
    for i, d in enumerate(docs):
        if isinstance(d, dict) and d.get("kind") == "List" and isinstance(d.get("items"), list):
            out.extend(d["items"])  # what `get -o yaml` of a list prints
        elif not isinstance(d, dict):
            raise ValidationError([Violation("", "a document must be a mapping",
                                             f"{source} doc {i + 1}".strip())])
        else:
            out.append(d)
    return out


def _doc_name(doc: dict[str, Any], index: int, source: str) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    kind = doc.get("kind", "?")
    name = meta.get("name", "?")
    ns = meta.get("namespace", "default")
    at = f"{source} " if source else ""
    return f"{at}doc {index + 1} ({kind} {ns}/{name})"


def parse_document(doc: dict[str, Any], index: int = 0, source: str = "") -> Resource:
    """Validate one document; raises ValidationError with every violation in it."""
    where = _doc_name(doc, index, source)
    problems: list[Violation] = []
    for key in sorted(set(doc) - _ENVELOPE - _READ_ONLY_IGNORED):
        problems.append(Violation(key, "unknown field", where))
    kind = KINDS.get(doc.get("kind")) if isinstance(doc.get("kind"), str) else None
    if kind is None:
        known = ", ".join(sorted(KINDS))
        problems.append(Violation("kind", f"must be one of: {known}", where))
    elif doc.get("apiVersion") not in kind.api_versions:
        problems.append(Violation(
            "apiVersion", f"{kind.name} takes apiVersion {' or '.join(kind.api_versions)}", where))
    metadata: Metadata | None = None
    try:
        metadata = Metadata.model_validate(doc.get("metadata"))
        if metadata.resource_version is not None:
            metadata = metadata.model_copy(update={"resource_version": None})
    except pydantic.ValidationError as e:
        problems += _pydantic_violations(e, ("metadata",), where)
    spec = None
    if kind is not None:
        if "spec" not in doc:
            problems.append(Violation("spec", "is required", where))
        else:
            try:
                spec = kind.spec.model_validate(doc["spec"])
            except pydantic.ValidationError as e:
                problems += _pydantic_violations(e, ("spec",), where)
    if problems:
        raise ValidationError(problems)
    assert kind is not None and metadata is not None
    return Resource(api_version=doc["apiVersion"], kind=kind.name, metadata=metadata, spec=spec)


def parse_documents(docs: Sequence[dict[str, Any]], source: str = "") -> list[Resource]:
    """All-or-nothing: every document valid and no key twice, or one error listing all."""
    problems: list[Violation] = []
    out: list[Resource] = []
    seen: dict[ResourceKey, int] = {}
    for i, doc in enumerate(docs):
        try:
            r = parse_document(doc, i, source)
        except ValidationError as e:
            problems += e.violations
            continue
        if r.key in seen:
            problems.append(Violation("metadata.name", f"{r.key} already appears in doc "
                                      f"{seen[r.key] + 1}", _doc_name(doc, i, source)))
        seen[r.key] = i
        out.append(r)
    if problems:
        raise ValidationError(problems)
    return out


def parse_yaml(text: str, source: str = "") -> list[Resource]:
    return parse_documents(load_documents(text, source), source)


def load_resource(data: dict[str, Any]) -> Resource:
    """Re-read a stored resource (keeps resourceVersion); the store's loader."""
    r = parse_document(data)
    rv = (data.get("metadata") or {}).get("resourceVersion")
    ts = (data.get("metadata") or {}).get("creationTimestamp")
    meta = r.metadata.model_copy(update={"resource_version": rv, "creation_timestamp": ts})
    return r.model_copy(update={"metadata": meta})
