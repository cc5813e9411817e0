"""A pure evaluator of Istio authorization: the same decision the sidecar's filters make.

Order (as in the generated Envoy config): the destination port's mTLS mode (a STRICT port
refuses a caller without a mesh certificate), then CUSTOM policies (a matching rule sends
the request to the external authorizer: the decision is then "if it allows", named in
``external``), then DENY policies (any matching rule denies), then ALLOW policies (when
any applies, some rule must match), AUDIT only noted.
JWT *validation* is not re-done here: ``claims`` are taken as a verified token's payload.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shoal.api.meta import Resource
from shoal.security.model import (
    Action,
    Condition,
    MtlsMode,
    Operation,
    Rule,
    Source,
    parse_condition_key,
)
from shoal.security.scoping import applicable, mtls_mode


@dataclass(frozen=True)
class Request:
    port: int  # where the destination workload's sidecar receives
    http: bool = True
    principal: str | None = None  # "<td>/ns/<ns>/sa/<sa>"; None = no mesh mTLS
    source_ip: str | None = None
    method: str = "GET"
    path: str = "/"
    host: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # lowercase names
    claims: Mapping[str, Any] | None = None  # a verified JWT's payload; None = no token

    @property
    def namespace(self) -> str | None:
        if self.principal and "/ns/" in self.principal:
            return self.principal.split("/ns/", 1)[1].split("/", 1)[0]
        return None

    @property
    def request_principal(self) -> str | None:
        if self.claims is None or "iss" not in self.claims or "sub" not in self.claims:
            return None
        return f"{self.claims['iss']}/{self.claims['sub']}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    policy: str | None = None  # "<namespace>/<name>" or "PeerAuthentication"
    rule: int | None = None
    audited: tuple[str, ...] = ()
    mtls_mode: str = ""
    # a CUSTOM policy matches: the request is first sent to this extension provider, and
    # ``allowed`` holds only if it allows the request
    external: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"decision": "ALLOWED" if self.allowed else "DENIED", "reason": self.reason,
                "policy": self.policy, "rule": self.rule, "audited": list(self.audited),
                "mtlsMode": self.mtls_mode, "external": self.external}


def wildcard(pattern: str, value: str | None, ignore_case: bool = False) -> bool:
    if value is None:
        return False
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _in_cidrs(value: str | None) -> Callable[[str], bool]:
    def one(cidr: str) -> bool:
        if value is None:
            return False
        return ipaddress.ip_address(value) in ipaddress.ip_network(cidr, strict=False)
    return one


def _claim(claims: Mapping[str, Any] | None, path: Sequence[str]) -> Any:
    cur: Any = claims
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _claim_matches(value: Any) -> Callable[[str], bool]:
    values = value if isinstance(value, list) else [value]
    return lambda p: any(isinstance(v, str) and wildcard(p, v) for v in values)


def _field(values: Sequence[str], not_values: Sequence[str], one: Callable[[str], bool]
           ) -> bool:
    """A field holds when it is unset, or some value matches and no notValue does."""
    if values and not any(one(v) for v in values):
        return False
    return not (not_values and any(one(v) for v in not_values))


def _host(req: Request) -> Callable[[str], bool]:
    host = req.host.rsplit(":", 1)[0] if req.host.rsplit(":", 1)[-1].isdigit() else req.host
    return lambda p: p == "*" or wildcard(p, host, ignore_case=True)


def _source(s: Source, req: Request) -> bool:
    ok = (_field(s.principals, s.not_principals, lambda p: wildcard(p, req.principal))
          and _field(s.namespaces, s.not_namespaces, lambda p: wildcard(p, req.namespace))
          and _field(s.ip_blocks, s.not_ip_blocks, _in_cidrs(req.source_ip))
          and _field(s.remote_ip_blocks, s.not_remote_ip_blocks, _in_cidrs(req.source_ip)))
    if req.http:
        ok = ok and _field(s.request_principals, s.not_request_principals,
                           lambda p: wildcard(p, req.request_principal))
    return ok


def _operation(o: Operation, req: Request) -> bool:
    ok = _field(o.ports, o.not_ports, lambda p: p == str(req.port))
    if req.http:
        path = req.path.split("?", 1)[0]
        ok = (ok and _field(o.hosts, o.not_hosts, _host(req))
              and _field(o.methods, o.not_methods, lambda p: wildcard(p, req.method))
              and _field(o.paths, o.not_paths, lambda p: p == "*" or wildcard(p, path)))
    return ok


def _condition(c: Condition, req: Request) -> bool:
    name, parts = parse_condition_key(c.key)
    one: Callable[[str], bool] = {
        "request.headers": lambda p: wildcard(p, req.headers.get(parts[0].lower())),
        "source.ip": _in_cidrs(req.source_ip),
        "remote.ip": _in_cidrs(req.source_ip),
        "source.namespace": lambda p: wildcard(p, req.namespace),
        "source.principal": lambda p: wildcard(p, req.principal),
        "request.auth.principal": lambda p: wildcard(p, req.request_principal),
        "request.auth.audiences": _claim_matches(_claim(req.claims, ["aud"])),
        "request.auth.presenter": _claim_matches(_claim(req.claims, ["azp"])),
        "request.auth.claims": _claim_matches(_claim(req.claims, parts)),
        "destination.port": lambda p: p == str(req.port),
    }[name]
    return _field(c.values, c.not_values, one)


def rule_matches(rule: Rule, action: Action, req: Request) -> bool:
    if not req.http and action in (Action.ALLOW, Action.AUDIT) and rule.http_only_fields():
        return False  # dropped on TCP ports: fails closed
    return ((not rule.from_ or any(_source(f.source, req) for f in rule.from_))
            and (not rule.to or any(_operation(t.operation, req) for t in rule.to))
            and all(_condition(c, req) for c in rule.when if req.http or not c.http_only))


def _first_match(policies: Sequence[Resource], action: Action, req: Request
                 ) -> tuple[Resource, int] | None:
    for r in policies:
        if r.spec.action is action:
            for i, rule in enumerate(r.spec.rules):
                if rule_matches(rule, action, req):
                    return r, i
    return None


def _name(r: Resource) -> str:
    return f"{r.metadata.namespace}/{r.metadata.name}"


def evaluate(mesh: Any, workload: Resource, req: Request) -> Decision:
    """``mesh``: a :class:`~shoal.registry.snapshot.MeshSnapshot`."""
    mode = mtls_mode(mesh, workload, req.port)
    if mode is MtlsMode.STRICT and req.principal is None:
        return Decision(False, "STRICT mTLS on this port: a caller without a mesh "
                        "certificate is refused", "PeerAuthentication", mtls_mode=mode)
    principal = req.principal if mode is not MtlsMode.DISABLE else None
    if principal != req.principal:  # plaintext port: the peer's identity is unknown
        req = replace(req, principal=None)
    policies = sorted(applicable(mesh, "AuthorizationPolicy", workload),
                      key=lambda r: (r.metadata.namespace, r.metadata.name))
    decision = _decide(policies, req, mode)
    custom = _first_match(policies, Action.CUSTOM, req)
    if custom is None or not decision.allowed:
        return decision
    provider = custom[0].spec.provider.name
    return replace(decision, external=provider, reason=f"if extension provider "
                   f"{provider!r} allows it (CUSTOM policy {_name(custom[0])} rule "
                   f"{custom[1]} matches): {decision.reason}")


def _decide(policies: Sequence[Resource], req: Request, mode: MtlsMode) -> Decision:
    audit = _first_match(policies, Action.AUDIT, req)
    audited = (f"{_name(audit[0])} rule {audit[1]}",) if audit else ()
    deny = _first_match(policies, Action.DENY, req)
    if deny:
        return Decision(False, "a DENY policy matches", _name(deny[0]), deny[1], audited,
                        mode)
    if not any(r.spec.action is Action.ALLOW for r in policies):
        return Decision(True, "no ALLOW policy applies to the workload", None, None,
                        audited, mode)
    allow = _first_match(policies, Action.ALLOW, req)
    if allow:
        return Decision(True, "an ALLOW policy matches", _name(allow[0]), allow[1], audited,
                        mode)
    return Decision(False, "ALLOW policies apply and none matches", None, None, audited, mode)
