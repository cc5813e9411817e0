"""YAML/JSON documents -> typed :class:`Resource` objects, reporting every violation.

``parse_documents`` is all-or-nothing: it returns resources only when every document is
valid, and otherwise raises one :class:`ValidationError` listing each problem with the
document it is in and its field path (``spec.http[0].route[1].weight``).

YAML is read by :class:`BoundedLoader`, which holds the text to the limits of
:mod:`shoal.api.limits` (depth, values and characters after alias expansion, integer
size) while it composes, before anything is built from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pydantic
import yaml

from shoal.api import limits
from shoal.api.kinds import BY_DOCUMENT_KIND, kind_of
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


def pydantic_violations(e: pydantic.ValidationError, prefix: tuple, doc: str) -> list[Violation]:
    out = []
    for err in e.errors():
        # pydantic adds the tag of function validators to the location; drop them
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        out.append(Violation(field_path(prefix + loc), _message(err), doc))
    return out


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that keeps count while it composes the node graph, before any Python
    object is built: mappings and lists nested within one another, and the values and
    scalar characters the documents will have once every alias is expanded (an alias
    counts as a copy of what it refers to). It refuses, as a ValidationError naming the
    line, what exceeds :mod:`shoal.api.limits`, aliases to a node that contains them
    (a recursive structure cannot be stored as JSON) and over-long integers."""

    def __init__(self, stream: str, source: str = "") -> None:
        super().__init__(stream)
        self.source = source
        self._depth = 0  # mappings and lists open around the node being composed
        self._deepest = 0  # the deepest reached within the node being composed
        self._nodes = 0  # in every document so far, aliases expanded
        self._chars = 0
        # id(anchored node) -> (values, characters, depth) it stands for when aliased
        self._extent: dict[int, tuple[int, int, int]] = {}

    def _refuse(self, mark: Any, message: str) -> ValidationError:
        where = f"line {mark.line + 1}" if mark is not None else ""
        return ValidationError([Violation(where, message, self.source)])

    def _count(self, mark: Any, nodes: int, chars: int, depth: int) -> None:
        self._nodes += nodes
        self._chars += chars
        self._deepest = max(self._deepest, depth)
        if depth > limits.MAX_DEPTH:
            raise self._refuse(mark, limits.TOO_DEEP)
        if self._nodes > limits.MAX_NODES:
            raise self._refuse(mark, limits.too_many_values())
        if self._chars > limits.MAX_EXPANDED_CHARS:
            raise self._refuse(mark, limits.TOO_MUCH_TEXT)

    def compose_document(self) -> Any:
        self._extent = {}  # anchors are per document
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is reported by the composer
                extent = self._extent.get(id(target))
                if extent is None:
                    raise self._refuse(event.start_mark, f"alias *{event.anchor} refers to a "
                                       "node that contains it (a recursive structure)")
                nodes, chars, height = extent
                self._count(event.start_mark, nodes, chars, self._depth + height)
            return super().compose_node(parent, index)
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        nodes, chars, outer = self._nodes, self._chars, self._deepest
        if collection:
            self._depth += 1
        self._deepest = self._depth
        self._count(event.start_mark, 1, 0, self._depth)
        node = super().compose_node(parent, index)
        if isinstance(node, yaml.ScalarNode):
            self._count(event.start_mark, 0, len(node.value), self._depth)
        height = self._deepest - self._depth + (1 if collection else 0)
        if collection:
            self._depth -= 1
        self._deepest = max(outer, self._deepest)
        if getattr(event, "anchor", None) is not None:
            self._extent[id(node)] = (self._nodes - nodes, self._chars - chars, height)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return super().construct_object(node, deep)
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError):
            # a scalar explicitly tagged as what it is not: `!!int x`, `!!bool maybe`
            tag = node.tag.rsplit(":", 1)[-1]
            raise self._refuse(node.start_mark, f"{node.value[:40]!r} is not a valid "
                                                f"{tag}") from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # some forms (sexagesimal 1:2:3...) convert in time quadratic in their length,
        # and CPython refuses decimal text of more than 4,300 digits with a ValueError
        if len(node.value) > limits.MAX_INT_LITERAL_CHARS:
            raise self._refuse(node.start_mark, limits.INT_TOO_LARGE)
        value = super().construct_yaml_int(node)
        if not limits.int_fits(value):
            raise self._refuse(node.start_mark, limits.INT_TOO_LARGE)
        return value


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def _load_all(text: str, source: str) -> list[Any]:
    loader = BoundedLoader(text, source)
    try:
        docs = []
        while loader.check_data():
            docs.append(loader.get_data())
        return docs
    finally:
        loader.dispose()


def load_documents(text: str, source: str = "") -> list[Any]:
    """Split multi-document YAML (JSON is YAML too); empty documents are skipped.

    Held to :mod:`shoal.api.limits`: an alias bomb, deep nesting or a huge integer is a
    ValidationError naming the limit, not a 100 MB document, a crash or a 500."""
    try:
        docs = [d for d in _load_all(text, source) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem, context = getattr(e, "problem", None) or e, getattr(e, "context", None)
        what = f"{context}: {problem}" if context else problem
        raise ValidationError([Violation(where, f"invalid YAML: {what}", source)]) from None
    except RecursionError:  # not reached within MAX_DEPTH; a last line of defence
        raise limits.refused(limits.TOO_DEEP, document=source) from None
    return _unwrap_lists(docs, source)


def documents_from_json(body: Any, source: str = "") -> list[Any]:
    """The documents of a decoded JSON apply body: a list of documents,
    ``{"documents": [...]}``, a ``kind: List`` or one document. What each document is
    is for :func:`parse_documents` to check."""
    if isinstance(body, dict) and "documents" in body:
        docs = body["documents"]
        if not isinstance(docs, list):
            raise ValidationError([Violation("documents", "must be a list of documents",
                                             source)])
    else:
        docs = body if isinstance(body, list) else [body]
    return _unwrap_lists(docs, source, strict=False)


def _unwrap_lists(docs: list[Any], source: str, *, strict: bool = True) -> list[Any]:
    """``kind: List`` documents replaced by their items; ``strict``: every document must
    be a mapping (the YAML rule; parse_documents reports the others one by one)."""
    out = []
    for i, d in enumerate(docs):
        if isinstance(d, dict) and d.get("kind") == "List" and isinstance(d.get("items"), list):
            out.extend(d["items"])  # what `get -o yaml` of a list prints
        elif strict and not isinstance(d, dict):
            raise ValidationError([Violation("", "a document must be a mapping",
                                             f"{source} doc {i + 1}".strip())])
        else:
            out.append(d)
    return out


def _short(value: Any, default: str = "?") -> str:
    """A string from the document, cut to a length fit for a message; else ``default``."""
    if not isinstance(value, str):
        return default
    return value if len(value) <= 80 else value[:77] + "..."


def _doc_name(doc: Any, index: int, source: str) -> str:
    at = f"{source} " if source else ""
    if not isinstance(doc, dict):
        return f"{at}doc {index + 1}"
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    kind = _short(doc.get("kind"))
    name = _short(meta.get("name"))
    ns = _short(meta.get("namespace"), "default")
    return f"{at}doc {index + 1} ({kind} {ns}/{name})"


def _type(value: Any) -> str:
    """What a decoded value is, in the words of YAML/JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def parse_document(doc: Any, index: int = 0, source: str = "") -> Resource:
    """Validate one document; raises ValidationError with every violation in it.

    Any decoded value may be passed: one that is not a mapping, or whose envelope has the
    wrong shape (``metadata: null``, ``spec: []``), is a violation with its path too."""
    where = _doc_name(doc, index, source)
    if not isinstance(doc, dict):
        raise ValidationError([Violation(
            "", "a document must be a mapping with apiVersion, kind, metadata and spec, "
            f"not {_type(doc)}", where)])
    problems: list[Violation] = []
    for key in sorted(set(doc) - _ENVELOPE - _READ_ONLY_IGNORED, key=str):
        problems.append(Violation(_short(str(key)), "unknown field", where))
    kind_name = doc.get("kind")
    version = doc.get("apiVersion")
    kind = kind_of(kind_name, version if isinstance(version, str) else "") \
        if isinstance(kind_name, str) else None
    if kind is None and isinstance(kind_name, str) and kind_name in BY_DOCUMENT_KIND:
        takes = " or ".join(v for k in BY_DOCUMENT_KIND[kind_name] for v in k.api_versions)
        problems.append(Violation("apiVersion", f"{kind_name} takes apiVersion {takes}", where))
    elif kind is None:
        known = ", ".join(sorted(BY_DOCUMENT_KIND))
        problems.append(Violation("kind", f"must be one of: {known}", where))
    elif version not in kind.api_versions:
        problems.append(Violation(
            "apiVersion", f"{kind.document_kind} takes apiVersion "
            f"{' or '.join(kind.api_versions)}", where))
    metadata: Metadata | None = None
    if "metadata" not in doc:
        problems.append(Violation("metadata", "is required", where))
    elif not isinstance(doc["metadata"], dict):
        problems.append(Violation(
            "metadata", f"must be a mapping with at least name, not {_type(doc['metadata'])}",
            where))
    else:
        try:
            metadata = Metadata.model_validate(doc["metadata"])
            if metadata.resource_version is not None or metadata.generation is not None:
                metadata = metadata.model_copy(update={"resource_version": None,
                                                       "generation": None})
        except pydantic.ValidationError as e:
            problems += pydantic_violations(e, ("metadata",), where)
    spec = None
    if kind is not None:
        if "spec" not in doc and kind.spec_optional:
            spec = kind.spec()
        elif "spec" not in doc:
            problems.append(Violation("spec", "is required", where))
        elif not isinstance(doc["spec"], dict):
            problems.append(Violation("spec", f"must be a mapping, not {_type(doc['spec'])}",
                                      where))
        else:
            try:
                spec = kind.spec.model_validate(doc["spec"])
            except pydantic.ValidationError as e:
                problems += pydantic_violations(e, ("spec",), where)
    if problems:
        raise ValidationError(problems)
    assert kind is not None and metadata is not None
    return Resource(api_version=doc["apiVersion"], kind=kind.name, metadata=metadata, spec=spec)


def parse_documents(docs: Sequence[Any], source: str = "") -> list[Resource]:
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


def in_namespace(docs: Sequence[Any], namespace: str, source: str = "") -> list[Any]:
    """kubectl's ``-n``: a document without a namespace gets ``namespace``; one that names
    another namespace is refused (all documents, or an error listing every conflict)."""
    problems: list[Violation] = []
    out: list[Any] = []
    for i, doc in enumerate(docs):
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        kind = kind_of(doc.get("kind"), str(doc.get("apiVersion"))) \
            if isinstance(doc, dict) and isinstance(doc.get("kind"), str) else None
        if kind is not None and kind.cluster_scoped:
            out.append(doc)  # no namespace of its own (kubectl ignores -n for it too)
            continue
        if isinstance(meta, dict):
            given = meta.get("namespace")
            if given is None or given == "":
                doc = {**doc, "metadata": {**meta, "namespace": namespace}}
            elif given != namespace:
                problems.append(Violation(
                    "metadata.namespace",
                    f"is {_short(given)!r} but the request is for namespace {namespace!r}: "
                    f"leave it out of the document, or apply with -n {_short(given)}",
                    _doc_name(doc, i, source)))
        out.append(doc)
    if problems:
        raise ValidationError(problems)
    return out


def parse_yaml(text: str, source: str = "") -> list[Resource]:
    return parse_documents(load_documents(text, source), source)


def load_resource(data: dict[str, Any]) -> Resource:
    """Re-read a stored resource (keeps resourceVersion and generation); the store's
    loader."""
    r = parse_document(data)
    stored = data.get("metadata") or {}
    generation = stored.get("generation")
    meta = r.metadata.model_copy(update={
        "resource_version": stored.get("resourceVersion"),
        "creation_timestamp": stored.get("creationTimestamp"),
        "generation": generation if isinstance(generation, int) else None})
    return r.model_copy(update={"metadata": meta})


def model_violations(e: pydantic.ValidationError) -> list[Violation]:
    """A pydantic error of a request body (not a resource document) as violations."""
    return pydantic_violations(e, (), "")
