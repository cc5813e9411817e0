"""Rules in Envoy's rate-limit service format (``shoal ratelimit serve --descriptors``).

Istio's global rate-limit task (and its ``EnvoyFilter`` sample) runs Envoy's reference
rate-limit service with a config like::

    domain: productpage-ratelimit
    descriptors:
    - key: PATH
      value: /productpage
      rate_limit: {unit: minute, requests_per_unit: 1}
    - key: PATH
      rate_limit: {unit: minute, requests_per_unit: 100}

shoal's service reads the same files, so those filters work against it unchanged. The
semantics are that service's: a request descriptor's entries walk the tree of its
domain, each entry matching the child with the same key and value, else the child with
the key and no value; the node the last entry reaches decides (its ``rate_limit``, or
none). Counters are per distinct entry values (a key without a value counts each value
apart). ``unlimited: true`` never limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
from pydantic import Field, model_validator

from shoal.api.meta import Model  # snake_case, as Envoy's service writes it, is accepted
from shoal.api.parse import load_documents, pydantic_violations
from shoal.api.types import NotSupported
from shoal.errors import ValidationError, Violation
from shoal.ratelimit.rules import Rule

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_DEPTH = 8


class RateLimit(Model):
    unit: str | None = None
    requests_per_unit: int = Field(default=0, ge=0, le=10**12)
    unlimited: bool = False
    name: str | None = None
    replaces: NotSupported = None

    @model_validator(mode="after")
    def _unit(self) -> RateLimit:
        if self.unlimited:
            return self
        if self.unit not in UNITS:
            raise ValueError(f"unit: must be one of {', '.join(UNITS)} (or unlimited: true)")
        return self


class Descriptor(Model):
    key: str = Field(min_length=1)
    value: str | None = None
    rate_limit: RateLimit | None = None
    descriptors: list[Descriptor] = Field(default_factory=list)
    shadow_mode: NotSupported = None
    detailed_metric: NotSupported = None


class DomainConfig(Model):
    domain: str = Field(min_length=1)
    descriptors: list[Descriptor] = Field(default_factory=list)


@dataclass
class _Node:
    rule: Rule | None = None
    children: dict[tuple[str, str | None], _Node] = field(default_factory=dict)


@dataclass(frozen=True)
class DescriptorTable:
    """The domains' descriptor trees; ``rules`` (by id) for /stats."""

    domains: dict[str, _Node]
    rules: dict[str, Rule]

    @staticmethod
    def build(configs: Iterable[DomainConfig]) -> DescriptorTable:
        domains: dict[str, _Node] = {}
        rules: dict[str, Rule] = {}

        def add(parent: _Node, d: Descriptor, path: str, depth: int) -> None:
            if depth > MAX_DEPTH:
                raise ValidationError([Violation(path, f"nested deeper than {MAX_DEPTH}")])
            node = parent.children.setdefault((d.key, d.value), _Node())
            here = f"{path}.{d.key}" + (f"_{d.value}" if d.value is not None else "")
            rl = d.rate_limit
            if rl is not None and not rl.unlimited:
                assert rl.unit is not None
                node.rule = Rule(rl.name or here, rl.requests_per_unit, UNITS[rl.unit],
                                 False, None, None, True)
                rules[node.rule.id] = node.rule
            for child in d.descriptors:
                add(node, child, here, depth + 1)

        for cfg in configs:
            if cfg.domain in domains:
                raise ValidationError([Violation("domain", f"{cfg.domain!r} is configured "
                                                           "twice")])
            root = domains[cfg.domain] = _Node()
            for d in cfg.descriptors:
                add(root, d, cfg.domain, 1)
        return DescriptorTable(domains, rules)

    def lookup(self, entries: Sequence[tuple[str, str]], domain: str = ""
               ) -> tuple[Rule, str] | None:
        node = self.domains.get(domain)
        if node is None or not entries:
            return None
        for key, value in entries:
            nxt = node.children.get((key, value)) or node.children.get((key, None))
            if nxt is None:
                return None
            node = nxt
        if node.rule is None:
            return None
        return node.rule, domain + "|" + "|".join(f"{k}_{v}" for k, v in entries)


def load(paths: Iterable[Path]) -> DescriptorTable:
    """The files (one domain each, YAML) as one table; every problem with its path."""
    configs: list[DomainConfig] = []
    problems: list[Violation] = []
    for path in paths:
        try:
            docs = load_documents(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Violation("", f"cannot read: {e}", str(path)))
            continue
        except ValidationError as e:
            problems += e.violations
            continue
        for doc in docs:
            try:
                configs.append(DomainConfig.model_validate(doc))
            except pydantic.ValidationError as e:
                problems += pydantic_violations(e, (), str(path))
    if problems:
        raise ValidationError(problems)
    return DescriptorTable.build(configs)
