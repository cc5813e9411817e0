"""Small value types shared by several kinds: durations, string matches, "not supported"."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from shoal.api.meta import Model

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)$")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float:
    """Istio/protobuf duration text ("1.5s", "100ms", "1h") -> seconds."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{text!r} is not a duration such as '10s', '1.5s' or '250ms'")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


class DurationValue(str):
    """A duration as the user wrote it ("1.5s", "250ms"), parsed once where it enters the
    API: ``seconds`` is its value. A ``str`` so that config reads back as written."""

    __slots__ = ("seconds",)
    seconds: float

    def __new__(cls, text: str) -> DurationValue:
        out = super().__new__(cls, text)
        out.seconds = parse_duration(text)
        return out


def _duration(v: Any) -> DurationValue:
    if isinstance(v, DurationValue):
        return v
    if not isinstance(v, str):
        raise ValueError("must be a duration string such as '10s' or '250ms'")
    out = DurationValue(v)
    if out.seconds <= 0:
        raise ValueError("must be greater than zero")
    return out


# A duration field: validated and parsed at the API boundary, written back as its text.
Duration = Annotated[DurationValue, PlainValidator(_duration),
                     PlainSerializer(str, return_type=str), WithJsonSchema({"type": "string"})]


def _not_supported(v: Any) -> Any:
    raise ValueError("is not supported by shoal yet (see docs/reference for supported fields)")


# An Istio field shoal knows of but does not implement: setting it is an error naming it.
NotSupported = Annotated[Any, AfterValidator(_not_supported)]

# RE2 (Envoy's regex engine) has no look-around and no back-references.
_NOT_RE2 = re.compile(r"\(\?[=!<]|\\[1-9]")


def check_re2(pattern: str) -> str:
    if _NOT_RE2.search(pattern):
        raise ValueError("look-around and back-references are not supported by RE2")
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid regular expression: {e}") from None
    return pattern


class StringMatch(Model):
    """Exactly one of exact / prefix / regex."""

    exact: str | None = None
    prefix: str | None = None
    regex: Annotated[str, AfterValidator(check_re2)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        set_ = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError("exactly one of exact, prefix or regex must be set")
        return self
