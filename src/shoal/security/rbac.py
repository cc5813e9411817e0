"""AuthorizationPolicy -> Envoy RBAC filters of an inbound port.

One RBAC filter per action present, in this order: DENY (action DENY), ALLOW (action
ALLOW: a request must match some rule of some ALLOW policy), AUDIT (action LOG). Each
Istio rule becomes one Envoy policy named ``ns[<ns>]-policy[<name>]-rule[<i>]``.

TCP ports (Istio's behaviour): a rule using HTTP-only fields (methods, paths, hosts,
requestPrincipals, request.* conditions) is dropped from ALLOW/AUDIT policies — it can
never match, so it fails closed — and in DENY policies those fields are removed, so the
rule denies more, never less.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2

from shoal.api.meta import Resource
from shoal.security import rbac_match as m
from shoal.security.model import (
    Action,
    AuthorizationPolicySpec,
    Condition,
    Operation,
    Rule,
    Source,
    parse_condition_key,
)
from shoal.xds.generate.protocol import pack

HTTP_RBAC = "envoy.filters.http.rbac"
NET_RBAC = "envoy.filters.network.rbac"
_ENVOY_ACTION = {Action.DENY: rbac_pb2.RBAC.DENY, Action.ALLOW: rbac_pb2.RBAC.ALLOW,
                 Action.AUDIT: rbac_pb2.RBAC.LOG,
                 Action.CUSTOM: rbac_pb2.RBAC.DENY}  # marks what to check (ext_authz.py)
ORDER = (Action.DENY, Action.ALLOW, Action.AUDIT)


def policy_name(r: Resource, index: int) -> str:
    return f"ns[{r.metadata.namespace}]-policy[{r.metadata.name}]-rule[{index}]"


def _source(s: Source, http: bool) -> rbac_pb2.Principal:
    ids: list[rbac_pb2.Principal] = []
    ids += m.field_ids(s.principals, m.principal, False)
    ids += m.field_ids(s.not_principals, m.principal, True)
    ids += m.field_ids(s.namespaces, m.namespace, False)
    ids += m.field_ids(s.not_namespaces, m.namespace, True)
    ids += m.field_ids(s.ip_blocks, m.direct_ip, False)
    ids += m.field_ids(s.not_ip_blocks, m.direct_ip, True)
    ids += m.field_ids(s.remote_ip_blocks, m.remote_ip, False)
    ids += m.field_ids(s.not_remote_ip_blocks, m.remote_ip, True)
    if http:
        ids += m.field_ids(s.request_principals, m.request_principal, False)
        ids += m.field_ids(s.not_request_principals, m.request_principal, True)
    return m.all_of_ids(ids)


def _operation(o: Operation, http: bool) -> rbac_pb2.Permission:
    rules: list[rbac_pb2.Permission] = []
    rules += m.field_rules(o.ports, m.port, False)
    rules += m.field_rules(o.not_ports, m.port, True)
    if http:
        rules += m.field_rules(o.hosts, m.host, False)
        rules += m.field_rules(o.not_hosts, m.host, True)
        rules += m.field_rules(o.methods, m.method, False)
        rules += m.field_rules(o.not_methods, m.method, True)
        rules += m.field_rules(o.paths, m.path, False)
        rules += m.field_rules(o.not_paths, m.path, True)
    return m.all_of_rules(rules)


def _condition(c: Condition) -> tuple[list[rbac_pb2.Principal], list[rbac_pb2.Permission]]:
    """A ``when`` condition: principal parts, permission parts (ANDed with the rule)."""
    name, parts = parse_condition_key(c.key)
    if name == "destination.port":
        return [], (m.field_rules(c.values, m.port, False)
                    + m.field_rules(c.not_values, m.port, True))
    one = {
        "request.headers": m.header(parts[0]) if parts else None,
        "source.ip": m.direct_ip,
        "remote.ip": m.remote_ip,
        "source.namespace": m.namespace,
        "source.principal": m.principal,
        "request.auth.principal": m.request_principal,
        "request.auth.audiences": m.claim(["aud"]),
        "request.auth.presenter": m.claim(["azp"]),
        "request.auth.claims": m.claim(parts),
    }[name]
    assert one is not None
    return m.field_ids(c.values, one, False) + m.field_ids(c.not_values, one, True), []


def rule_policy(rule: Rule, http: bool) -> rbac_pb2.Policy:
    """One Istio rule (already filtered for TCP) as one Envoy policy."""
    ids: list[rbac_pb2.Principal] = []
    perms: list[rbac_pb2.Permission] = []
    if rule.from_:
        ids.append(m.any_of_ids([_source(f.source, http) for f in rule.from_]))
    if rule.to:
        perms.append(m.any_of_rules([_operation(t.operation, http) for t in rule.to]))
    for c in rule.when:
        if c.http_only and not http:
            continue
        p, q = _condition(c)
        ids += p
        perms += q
    return rbac_pb2.Policy(permissions=[m.all_of_rules(perms)], principals=[m.all_of_ids(ids)])


def envoy_rules(policies: Sequence[Resource], action: Action, http: bool) -> rbac_pb2.RBAC:
    """All rules of the ``action`` policies (None-matching ones left out)."""
    out = rbac_pb2.RBAC(action=_ENVOY_ACTION[action])
    for r in policies:
        spec: AuthorizationPolicySpec = r.spec
        if spec.action is not action:
            continue
        for i, rule in enumerate(spec.rules):
            if not http and action in (Action.ALLOW, Action.AUDIT) \
                    and rule.http_only_fields():
                continue  # can never match a TCP connection: fail closed
            out.policies[policy_name(r, i)].CopyFrom(rule_policy(rule, http))
    return out


def _present(policies: Sequence[Resource]) -> list[Action]:
    actions = {r.spec.action for r in policies}
    return [a for a in ORDER if a in actions]


def http_filters(policies: Sequence[Resource]) -> tuple[hcm_pb2.HttpFilter, ...]:
    out = []
    for action in _present(policies):
        rules = envoy_rules(policies, action, http=True)
        if action is Action.DENY and not rules.policies:
            continue
        cfg = http_rbac_pb2.RBAC(rules=rules, rules_stat_prefix=f"{action.lower()}.")
        out.append(hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(cfg)))
    return tuple(out)


def network_filters(policies: Sequence[Resource], stat_prefix: str
                    ) -> tuple[listener_components_pb2.Filter, ...]:
    out = []
    for action in _present(policies):
        rules = envoy_rules(policies, action, http=False)
        if action is Action.DENY and not rules.policies:
            continue
        cfg = net_rbac_pb2.RBAC(rules=rules, stat_prefix=f"{stat_prefix}.{action.lower()}.")
        out.append(listener_components_pb2.Filter(name=NET_RBAC, typed_config=pack(cfg)))
    return tuple(out)
