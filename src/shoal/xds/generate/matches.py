"""VirtualService match conditions (HTTPMatchRequest) -> Envoy RouteMatch."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from shoal.api.networking import HTTPMatchRequest
from shoal.api.types import StringMatch


def string_matcher(m: StringMatch, *, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if m.exact is not None:
        return string_pb2.StringMatcher(exact=m.exact, ignore_case=ignore_case)
    if m.prefix is not None:
        return string_pb2.StringMatcher(prefix=m.prefix, ignore_case=ignore_case)
    assert m.regex is not None
    return string_pb2.StringMatcher(safe_regex=regex(m.regex, ignore_case=ignore_case))


def regex(pattern: str, *, ignore_case: bool = False) -> regex_pb2.RegexMatcher:
    # RE2 is Envoy's default engine; case folding is a flag in the pattern
    return regex_pb2.RegexMatcher(regex=f"(?i){pattern}" if ignore_case else pattern)


def header(name: str, m: StringMatch, *, invert: bool = False) -> rc_pb2.HeaderMatcher:
    return rc_pb2.HeaderMatcher(name=name, string_match=string_matcher(m), invert_match=invert)


def route_match(m: HTTPMatchRequest | None) -> rc_pb2.RouteMatch:
    """One Istio match (all conditions ANDed) -> RouteMatch; ``None`` matches everything."""
    out = rc_pb2.RouteMatch()
    uri = m.uri if m is not None else None
    if uri is None or uri.prefix is not None:
        out.prefix = uri.prefix if uri is not None and uri.prefix is not None else "/"
    elif uri.exact is not None:
        out.path = uri.exact
    else:
        assert uri.regex is not None
        out.safe_regex.CopyFrom(regex(uri.regex, ignore_case=m.ignore_uri_case))
    if m is None:
        return out
    if m.ignore_uri_case and uri is not None and uri.regex is None:
        out.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=False))
    if m.method is not None:
        out.headers.append(header(":method", m.method))
    if m.authority is not None:
        out.headers.append(header(":authority", m.authority))
    for name in sorted(m.headers):
        out.headers.append(header(name, m.headers[name]))
    for name in sorted(m.without_headers):
        out.headers.append(header(name, m.without_headers[name], invert=True))
    for name in sorted(m.query_params):
        out.query_parameters.append(
            rc_pb2.QueryParameterMatcher(
                name=name, string_match=string_matcher(m.query_params[name])
            )
        )
    return out


def applies_to_port(m: HTTPMatchRequest, port: int) -> bool:
    """A match naming a port only applies to the virtual host of that port."""
    return m.port is None or m.port == port
