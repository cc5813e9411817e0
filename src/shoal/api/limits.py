"""Bounds on what the control plane accepts from a request, in one place.

Every REST surface that decodes a client's bytes (``POST /api/v1/apply`` as YAML or JSON,
every JSON-body route through :func:`shoal.control.errors.json_body`, the Zipkin span
receiver) holds the input to these limits before anything is validated or stored, so
hostile input costs a bounded amount of memory and CPU and answers a 4xx that names the
limit (422, or 413 for a body that is too large) instead of a 500, a crash or a 100 MB
resource stored from 10 KB of YAML aliases ("billion laughs").

Each limit is far above what real configuration needs, so a real user never meets one:

* ``MAX_DEPTH`` — the deepest Istio resources (a VirtualService's
  ``spec.http[].match[].headers.<name>.exact``) nest about 8 levels; 64 is 8x that and
  still far below the recursion limits of the JSON/YAML decoders and pydantic.
* ``MAX_INT_DIGITS`` — the widest integers in any field are 64-bit (20 digits); 30 leaves
  room and stays clear of CPython's 4,300-digit int-conversion guard (a ValueError).
* ``MAX_NODES`` — values (mappings, lists and scalars) in one request after YAML aliases
  are expanded: a Service is ~17, a large VirtualService a few hundred, so 100k is
  ~5,000 Services or hundreds of large VirtualServices in one apply. Counting *after*
  expansion is what defuses an alias bomb: 9 nested levels of ten aliases each are a
  billion values in ~1 KB of text. It also bounds the CPU of one request (PyYAML
  composes some 40k values a second, on the control plane's event loop).
* ``MAX_EXPANDED_CHARS`` — characters of scalar text after alias expansion: aliases may
  not make a request bigger than one that could be sent without them
  (``MAX_APPLY_BODY_BYTES``), so one long string aliased a thousand times cannot either.
* ``MAX_INT_LITERAL_CHARS`` — the text of a YAML integer (``0b…``, ``0x…``, ``1:30:00``)
  longer than this is refused before it is converted, since the conversion of some
  forms (sexagesimal) takes time quadratic in the length.
* Body sizes — an apply of a large bundle fits in 8 MiB (also the REST app's
  ``client_max_size``, the most any route reads); the other JSON bodies (registration,
  heartbeat, token requests, remote secrets) are a few KB, so 1 MiB; Envoy's Zipkin
  tracer sends batches of a few spans, far below 8 MiB. Spans are not held to
  ``MAX_NODES`` (a batch is bounded by ``shoal.telemetry.zipkin.MAX_SPANS`` instead).
"""

from __future__ import annotations

import json
import math
from typing import Any

from shoal.errors import ValidationError, Violation

MAX_DEPTH = 64
MAX_INT_DIGITS = 30
MAX_INT_LITERAL_CHARS = 4 * MAX_INT_DIGITS  # a binary literal needs ~3.3 digits per decimal
MAX_NODES = 100_000
MAX_APPLY_BODY_BYTES = 8 * 1024 * 1024
MAX_EXPANDED_CHARS = MAX_APPLY_BODY_BYTES
MAX_JSON_BODY_BYTES = 1024 * 1024
MAX_SPANS_BODY_BYTES = 8 * 1024 * 1024


# What a request that exceeds a limit is told (a Violation's message).
TOO_DEEP = f"mappings and lists nested more than {MAX_DEPTH} levels deep"
INT_TOO_LARGE = f"an integer has more than {MAX_INT_DIGITS} digits"
TOO_MUCH_TEXT = (f"more than {MAX_EXPANDED_CHARS} characters of text, each YAML alias "
                 "counted as a copy of what it refers to")


def too_many_values(limit: int = MAX_NODES) -> str:
    return (f"more than {limit} values (mappings, lists and scalars, each YAML alias "
            "counted as a copy of what it refers to)")


def refused(message: str, where: str = "", document: str = "") -> ValidationError:
    return ValidationError([Violation(where, message, document)])


def int_fits(value: int) -> bool:
    return -(10 ** MAX_INT_DIGITS) < value < 10 ** MAX_INT_DIGITS


def check_tree(value: Any, *, max_nodes: int | None = MAX_NODES, document: str = "") -> None:
    """Raise ValidationError if decoded JSON nests mappings and lists more than
    ``MAX_DEPTH`` deep, has more than ``max_nodes`` values or an integer of more than
    ``MAX_INT_DIGITS`` digits.

    An explicit stack, not recursion, and it stops at the first limit reached."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if max_nodes is not None and seen > max_nodes:
            raise refused(too_many_values(max_nodes), document=document)
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, int) and not isinstance(item, bool) and not int_fits(item):
                raise refused(INT_TOO_LARGE, document=document)
            continue
        if depth > MAX_DEPTH:
            raise refused(TOO_DEEP, document=document)
        stack.extend((child, depth + 1) for child in children)


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise refused(INT_TOO_LARGE)
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValidationError([Violation("", f"the number {text[:40]} is out of range")])
    return value


def _parse_constant(name: str) -> Any:
    raise ValidationError([Violation("", f"invalid JSON: {name} is not a JSON number")])


def loads_json(data: bytes | str, *, max_nodes: int | None = MAX_NODES) -> Any:
    """Decode a JSON request body within the limits above, or raise ValidationError.

    Never raises anything else: bad UTF-8, bad syntax, nesting too deep for the decoder
    (RecursionError), NaN/Infinity and over-long integers are all violations."""
    try:
        value = json.loads(data, parse_int=_parse_int, parse_float=_parse_float,
                           parse_constant=_parse_constant)
    except RecursionError:
        raise refused(TOO_DEEP) from None
    except UnicodeDecodeError:
        raise ValidationError([Violation("", "invalid JSON: the body is not UTF-8")]) from None
    except ValueError as e:  # json.JSONDecodeError and anything the decoder's hooks raise
        raise ValidationError([Violation("", f"invalid JSON: {e}")]) from None
    check_tree(value, max_nodes=max_nodes)
    return value
