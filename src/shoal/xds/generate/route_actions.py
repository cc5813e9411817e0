"""Pieces of a route besides its match and destinations: redirect, direct response,
rewrite, header operations and mirrors (VirtualService HTTP rule -> Envoy)."""

from __future__ import annotations

import base64
import re

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.type.matcher.v3 import regex_pb2

from shoal.api.gatewayapi import SEGMENTS, replace_prefix
from shoal.api.http_route import (
    PREFIX_MARKER,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPRedirect,
    HTTPRewrite,
)
from shoal.api.networking import HTTPMatchRequest
from shoal.xds.generate.route_filters import fraction

_REDIRECT_CODES = {
    301: rc_pb2.RedirectAction.MOVED_PERMANENTLY,
    302: rc_pb2.RedirectAction.FOUND,
    303: rc_pb2.RedirectAction.SEE_OTHER,
    307: rc_pb2.RedirectAction.TEMPORARY_REDIRECT,
    308: rc_pb2.RedirectAction.PERMANENT_REDIRECT,
}
_SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def redirect_action(r: HTTPRedirect, m: HTTPMatchRequest | None = None,
                    gateway_api: bool = False) -> rc_pb2.RedirectAction:
    """``gateway_api``: the route was translated from the Gateway API, where a ``uri`` of
    ``%PREFIX()%/new`` replaces the prefix ``m`` matched (``PREFIX_MARKER``)."""
    out = rc_pb2.RedirectAction(response_code=_REDIRECT_CODES[r.redirect_code])
    if r.uri is not None and gateway_api and r.uri.startswith(PREFIX_MARKER):
        pattern, substitution = replace_prefix(_matched_prefix(m),
                                               r.uri.removeprefix(PREFIX_MARKER))
        out.regex_rewrite.pattern.regex = pattern
        out.regex_rewrite.substitution = substitution
    elif r.uri is not None:
        out.path_redirect = r.uri
    if r.authority is not None:
        out.host_redirect = r.authority
    if r.port is not None:
        out.port_redirect = r.port
    if r.scheme is not None:
        out.scheme_redirect = r.scheme
    return out


def _matched_prefix(m: HTTPMatchRequest | None) -> str:
    """The prefix a translated route's match stands for, as a regex: its segment-wise
    prefix regex (registry/gamma.py), or a ``prefix`` match's text."""
    uri = m.uri if m is not None else None
    if uri is not None and uri.regex is not None and uri.regex.endswith(SEGMENTS):
        return uri.regex.removesuffix(SEGMENTS)
    if uri is not None and uri.prefix is not None:
        return re.escape(uri.prefix.rstrip("/"))
    return ""


def direct_response_action(d: HTTPDirectResponse) -> rc_pb2.DirectResponseAction:
    out = rc_pb2.DirectResponseAction(status=d.status)
    if d.body is not None and d.body.string is not None:
        out.body.inline_string = d.body.string
    elif d.body is not None and d.body.bytes is not None:
        out.body.inline_bytes = base64.b64decode(d.body.bytes)
    return out


def apply_rewrite(action: rc_pb2.RouteAction, rw: HTTPRewrite,
                  m: HTTPMatchRequest | None) -> None:
    """Istio: ``uri`` replaces the matched prefix (or the whole path of an exact or regex
    match); ``uriRegexRewrite`` substitutes with RE2 groups; ``authority`` sets Host."""
    if rw.authority is not None:
        action.host_rewrite_literal = rw.authority
    if rw.uri_regex_rewrite is not None:
        action.regex_rewrite.pattern.CopyFrom(regex_pb2.RegexMatcher(
            regex=rw.uri_regex_rewrite.match))
        action.regex_rewrite.substitution = rw.uri_regex_rewrite.rewrite
    elif rw.uri is not None:
        if m is not None and m.uri is not None and m.uri.regex is not None:
            action.regex_rewrite.pattern.CopyFrom(regex_pb2.RegexMatcher(regex="^.*$"))
            action.regex_rewrite.substitution = rw.uri
        else:
            action.prefix_rewrite = rw.uri


def _options(ops: HeaderOperations) -> list[base_pb2.HeaderValueOption]:
    out = [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v),
                                      append_action=_SET) for k, v in sorted(ops.set.items())]
    out += [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v),
                                       append_action=_ADD) for k, v in sorted(ops.add.items())]
    return out


def apply_headers(target: rc_pb2.Route | rc_pb2.WeightedCluster.ClusterWeight,
                  headers: Headers | None) -> None:
    """Header operations onto a route or one weighted destination."""
    if headers is None:
        return
    if headers.request is not None:
        target.request_headers_to_add.extend(_options(headers.request))
        target.request_headers_to_remove.extend(headers.request.remove)
    if headers.response is not None:
        target.response_headers_to_add.extend(_options(headers.response))
        target.response_headers_to_remove.extend(headers.response.remove)


def mirror_policy(cluster: str, percent: float) -> rc_pb2.RouteAction.RequestMirrorPolicy:
    out = rc_pb2.RouteAction.RequestMirrorPolicy(cluster=cluster)
    out.runtime_fraction.default_value.CopyFrom(fraction(percent))
    return out
