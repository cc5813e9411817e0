"""Envoy RBAC principals and permissions for Istio's AuthorizationPolicy fields.

Istio's value syntax everywhere: exact, prefix ``abc*``, suffix ``*abc``, presence ``*``.
Principals are the peer's URI SAN (``spiffe://`` + the Istio principal); namespaces are a
regex on it; request principals (``iss/sub``) and claims are read from the JWT payload
that ``jwt_authn`` leaves in dynamic metadata (see :mod:`shoal.security.jwt`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2
from google.protobuf import wrappers_pb2

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD_KEY = "payload"  # payload_in_metadata of every provider

P = rbac_pb2.Principal
Perm = rbac_pb2.Permission


def regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def string_match(v: str, *, prefix: str = "", ignore_case: bool = False
                 ) -> string_pb2.StringMatcher:
    """Istio wildcard value -> StringMatcher (``prefix`` is prepended to non-suffix forms)."""
    if v == "*":
        return regex(".+")
    if v.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + v[:-1], ignore_case=ignore_case)
    if v.startswith("*"):
        return string_pb2.StringMatcher(suffix=v[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + v, ignore_case=ignore_case)


def any_of_ids(ids: Sequence[P]) -> P:
    return ids[0] if len(ids) == 1 else P(or_ids=P.Set(ids=list(ids)))


def all_of_ids(ids: Sequence[P]) -> P:
    if not ids:
        return P(any=True)
    return ids[0] if len(ids) == 1 else P(and_ids=P.Set(ids=list(ids)))


def any_of_rules(rules: Sequence[Perm]) -> Perm:
    return rules[0] if len(rules) == 1 else Perm(or_rules=Perm.Set(rules=list(rules)))


def all_of_rules(rules: Sequence[Perm]) -> Perm:
    if not rules:
        return Perm(any=True)
    return rules[0] if len(rules) == 1 else Perm(and_rules=Perm.Set(rules=list(rules)))


def field_ids(values: Sequence[str], one: Callable[[str], P], negate: bool) -> list[P]:
    """[] when no values; else OR of the values (negated for notX fields)."""
    if not values:
        return []
    p = any_of_ids([one(v) for v in values])
    return [P(not_id=p)] if negate else [p]


def field_rules(values: Sequence[str], one: Callable[[str], Perm], negate: bool) -> list[Perm]:
    if not values:
        return []
    p = any_of_rules([one(v) for v in values])
    return [Perm(not_rule=p)] if negate else [p]


# -- principals (who) -------------------------------------------------------------------------


def principal(v: str) -> P:
    return P(authenticated=P.Authenticated(principal_name=string_match(v, prefix="spiffe://")))


def namespace(v: str) -> P:
    if v == "*":
        part = "[^/]+"
    elif v.endswith("*"):
        part = re.escape(v[:-1]) + "[^/]*"
    elif v.startswith("*"):
        part = "[^/]*" + re.escape(v[1:])
    else:
        part = re.escape(v)
    return P(authenticated=P.Authenticated(principal_name=regex(f"spiffe://[^/]+/ns/{part}/.*")))


def cidr(v: str) -> address_pb2.CidrRange:
    net = ipaddress.ip_network(v, strict=False)
    return address_pb2.CidrRange(address_prefix=str(net.network_address),
                                 prefix_len=wrappers_pb2.UInt32Value(value=net.prefixlen))


def direct_ip(v: str) -> P:
    return P(direct_remote_ip=cidr(v))


def remote_ip(v: str) -> P:
    return P(remote_ip=cidr(v))


def header(name: str) -> Callable[[str], P]:
    def one(v: str) -> P:
        return P(header=rc_pb2.HeaderMatcher(name=name, string_match=string_match(v)))
    return one


def _claim(path: Sequence[str], matcher: string_pb2.StringMatcher) -> P:
    """A JWT claim that is this string, or a list containing it."""
    segs = [metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (JWT_PAYLOAD_KEY, *path)]

    def md(value: value_pb2.ValueMatcher) -> P:
        return P(metadata=metadata_pb2.MetadataMatcher(filter=JWT_FILTER, path=segs, value=value))

    as_string = value_pb2.ValueMatcher(string_match=matcher)
    as_list = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=as_string))
    return any_of_ids([md(as_string), md(as_list)])


def claim(path: Sequence[str]) -> Callable[[str], P]:
    return lambda v: _claim(path, string_match(v))


def request_principal(v: str) -> P:
    """``iss/sub`` with Istio wildcards; ``sub`` is taken to contain no '/'."""
    if v == "*":
        return _claim(["iss"], regex(".+"))
    if v.endswith("*"):
        head = v[:-1]
        if "/" not in head:
            return _claim(["iss"], string_pb2.StringMatcher(prefix=head))
        iss, sub = head.rsplit("/", 1)
        ids = [_claim(["iss"], string_pb2.StringMatcher(exact=iss))]
        if sub:
            ids.append(_claim(["sub"], string_pb2.StringMatcher(prefix=sub)))
        return all_of_ids(ids)
    if v.startswith("*"):
        tail = v[1:]
        if "/" not in tail:
            return _claim(["sub"], string_pb2.StringMatcher(suffix=tail))
        iss, sub = tail.rsplit("/", 1)
        ids = [_claim(["sub"], string_pb2.StringMatcher(exact=sub))]
        if iss:
            ids.append(_claim(["iss"], string_pb2.StringMatcher(suffix=iss)))
        return all_of_ids(ids)
    iss, _, sub = v.rpartition("/")
    return all_of_ids([_claim(["iss"], string_pb2.StringMatcher(exact=iss)),
                       _claim(["sub"], string_pb2.StringMatcher(exact=sub))])


# -- permissions (what) -----------------------------------------------------------------------


def _any_or(v: str, make: Callable[[], Perm]) -> Perm:
    return Perm(any=True) if v == "*" else make()


def host(v: str) -> Perm:
    """Host header, case-insensitive, with or without a ``:port``."""
    def h(m: string_pb2.StringMatcher) -> Perm:
        return Perm(header=rc_pb2.HeaderMatcher(name=":authority", string_match=m))

    if v == "*":
        return Perm(any=True)
    if v.endswith("*"):
        return h(string_match(v, ignore_case=True))
    core = re.escape(v.lstrip("*"))
    pattern = f"(?i)(.*{core}|.*{core}:[0-9]+)" if v.startswith("*") else \
        f"(?i)({core}|{core}:[0-9]+)"
    return h(regex(pattern))


def method(v: str) -> Perm:
    return _any_or(v, lambda: Perm(header=rc_pb2.HeaderMatcher(
        name=":method", string_match=string_match(v))))


def path(v: str) -> Perm:
    return _any_or(v, lambda: Perm(url_path=path_pb2.PathMatcher(path=string_match(v))))


def port(v: str) -> Perm:
    return Perm(destination_port=int(v))
