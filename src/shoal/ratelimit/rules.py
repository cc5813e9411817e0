"""RateLimitPolicy resources -> rules: what the sidecars send and what the service counts.

Every limit and quota of a policy is one :class:`Rule` named ``<ns>/<policy>/<name>``.
A sidecar describes a request to the rate-limit service with one descriptor per rule
whose ``match`` the request satisfies:

    [("shoal_rule", "<ns>/<policy>/<name>"), ("shoal_match", "1")*, (<perHeader>, <value>)?]

so the service finds the rule by the first entry and counts per rule and header value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shoal.api.meta import Resource
from shoal.ratelimit.model import Limit, Mode, Quota, RateLimitPolicySpec, RequestMatch

KIND = "RateLimitPolicy"
DOMAIN = "shoal"
RULE_KEY = "shoal_rule"
MATCH_KEY = "shoal_match"


@dataclass(frozen=True)
class Rule:
    id: str  # <ns>/<policy>/<name>
    limit: int  # requests per window
    window: int  # seconds (fixed windows aligned to the epoch)
    quota: bool  # persisted long-window allowance
    per_header: str | None
    match: RequestMatch | None
    enforced_by_service: bool  # global limits and every quota

    @property
    def unit(self) -> str:
        return {1: "second", 60: "minute", 3600: "hour", 86400: "day"}[self.window]


def rule_id(policy: Resource, name: str) -> str:
    return f"{policy.metadata.namespace}/{policy.metadata.name}/{name}"


def _rule(policy: Resource, item: Limit | Quota, mode: Mode) -> Rule:
    if isinstance(item, Quota):
        return Rule(rule_id(policy, item.name), item.requests, item.unit.seconds, True,
                    item.per_header, item.match, True)
    return Rule(rule_id(policy, item.name), item.requests_per_unit, item.unit.seconds, False,
                item.per_header, item.match, mode is Mode.GLOBAL)


def policy_rules(policy: Resource) -> list[Rule]:
    spec: RateLimitPolicySpec = policy.spec
    return [_rule(policy, x, spec.mode) for x in (*spec.limits, *spec.quotas)]


@dataclass(frozen=True)
class RuleTable:
    """The rules the rate-limit service enforces, by id."""

    rules: dict[str, Rule]

    @staticmethod
    def build(policies: Iterable[Resource]) -> RuleTable:
        out: dict[str, Rule] = {}
        for policy in policies:
            for rule in policy_rules(policy):
                if rule.enforced_by_service:
                    out[rule.id] = rule
        return RuleTable(out)

    def lookup(self, entries: Sequence[tuple[str, str]], domain: str = ""
               ) -> tuple[Rule, str] | None:
        """The rule a descriptor names and its counter key (rule id + header value); the
        sidecars' requests carry shoal's own domain, so ``domain`` is not consulted."""
        if not entries or entries[0][0] != RULE_KEY:
            return None
        rule = self.rules.get(entries[0][1])
        if rule is None:
            return None
        value = ""
        if rule.per_header is not None:
            values = [v for k, v in entries[1:] if k == rule.per_header]
            if not values:
                return None
            value = values[0]
        return rule, f"{rule.id}|{value}"
