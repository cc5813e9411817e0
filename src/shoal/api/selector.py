"""Kubernetes label selectors: as text (``kubectl get -l``, the API's ``labelSelector``):
``key=value``, ``key==value``, ``key!=value``, ``key`` (has the label), ``!key`` (has
not), comma-separated, all of them must hold; set-based forms (``in``, ``notin``) are
refused by name rather than misread. And as a document field (:class:`MatchSelector`:
``matchLabels`` and ``matchExpressions``, e.g. a Gateway listener's namespaces)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from shoal.api.meta import Model
from shoal.errors import ValidationError, Violation

MAX_LENGTH = 1024  # a selector longer than this is refused, not parsed
# a label key: optional DNS-subdomain prefix and "/", then a name (Kubernetes' syntax)
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}"
                  r"[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """An equality selector (``matchLabels``, ``sourceLabels``, a Service's or Gateway's
    ``selector``): every label of it, with the same value. An empty selector selects
    everything; callers for which it means nothing say so. The one home of this rule."""
    return all(labels.get(k) == v for k, v in selector.items())


class Op(StrEnum):
    EQ = "="
    NE = "!="
    EXISTS = "exists"
    ABSENT = "!exists"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Op
    value: str = ""

    def holds(self, labels: Mapping[str, str]) -> bool:
        match self.op:
            case Op.EQ:
                return labels.get(self.key) == self.value
            case Op.NE:
                return labels.get(self.key) != self.value
            case Op.EXISTS:
                return self.key in labels
            case Op.ABSENT:
                return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.holds(labels) for r in self.requirements)

    @staticmethod
    def parse(text: str, field: str = "labelSelector") -> LabelSelector:
        """The selector, or a ValidationError naming what is wrong with it."""
        if len(text) > MAX_LENGTH:
            raise ValidationError([Violation(field, f"longer than {MAX_LENGTH} characters")])
        out: list[Requirement] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            out.append(_requirement(part, field))
        return LabelSelector(tuple(out))


def _requirement(part: str, field: str) -> Requirement:
    if re.search(r"\s(in|notin)\s*\(", part) or "(" in part:
        raise ValidationError([Violation(field, f"{part!r}: set-based selectors (in, notin) "
                                         "are not supported; use key=value, key!=value, "
                                         "key or !key")])
    if "!=" in part:
        key, value, op = *part.split("!=", 1), Op.NE
    elif "==" in part:
        key, value, op = *part.split("==", 1), Op.EQ
    elif "=" in part:
        key, value, op = *part.split("=", 1), Op.EQ
    elif part.startswith("!"):
        key, value, op = part[1:], "", Op.ABSENT
    else:
        key, value, op = part, "", Op.EXISTS
    key, value = key.strip(), value.strip()
    if not _KEY.match(key):
        raise ValidationError([Violation(field, f"{part!r}: {key!r} is not a label key")])
    if not _VALUE.match(value):
        raise ValidationError([Violation(field, f"{part!r}: {value!r} is not a label value")])
    return Requirement(key, op, value)


class ExpressionOp(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class MatchExpression(Model):
    key: str
    operator: ExpressionOp
    values: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _KEY.match(v):
            raise ValueError(f"{v!r} is not a label key")
        return v

    @model_validator(mode="after")
    def _values(self) -> MatchExpression:
        needs = self.operator in (ExpressionOp.IN, ExpressionOp.NOT_IN)
        if needs != bool(self.values):
            raise ValueError(f"operator {self.operator} " + (
                "needs values" if needs else "takes no values"))
        return self

    def holds(self, labels: Mapping[str, str]) -> bool:
        match self.operator:
            case ExpressionOp.IN:
                return labels.get(self.key) in self.values
            case ExpressionOp.NOT_IN:
                return labels.get(self.key) not in self.values
            case ExpressionOp.EXISTS:
                return self.key in labels
            case ExpressionOp.DOES_NOT_EXIST:
                return self.key not in labels


class MatchSelector(Model):
    """Kubernetes' ``LabelSelector`` field: every ``matchLabels`` pair and every
    expression must hold (an empty selector selects everything)."""

    match_labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    match_expressions: list[MatchExpression] = Field(default_factory=list, max_length=64)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return selects(self.match_labels, labels) and all(
            e.holds(labels) for e in self.match_expressions)
