"""ext-authz: an example external authorizer for ``AuthorizationPolicy`` action CUSTOM.

It behaves like Istio's ``samples/extauthz`` server, so Istio's external-authorization
task works with it: a request is allowed when it carries ``x-ext-authz: allow``, and the
result goes back in ``x-ext-authz-check-result`` (``allowed`` to the upstream,
``denied`` to the caller with 403). It speaks both of Envoy's protocols:

* HTTP on ``$PORT`` (default 8000): Envoy sends the request's method, path and the
  headers the provider's ``includeRequestHeadersInCheck`` lists; 200 allows.
* gRPC ``envoy.service.auth.v3.Authorization/Check`` on ``$GRPC_PORT`` (default 9000).
  A check without an HTTP request (a TCP connection) is allowed when the caller's
  verified identity is in ``$EXT_AUTHZ_ALLOWED_PRINCIPALS`` (comma-separated SPIFFE IDs).

Run beside a workload (``python -m shoal.demo.ext_authz``) and register it as a service
or a ServiceEntry host that the mesh config's ``extensionProviders`` names (docs/security.md).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from concurrent import futures
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from shoal.demo.common import Request, Response, serve, wait_for_signal

log = logging.getLogger("shoal.demo.ext_authz")

CHECK_HEADER = "x-ext-authz"
ALLOW_VALUE = "allow"
RESULT_HEADER = "x-ext-authz-check-result"
DENIED_BODY = (f"denied by ext_authz for not found header `{CHECK_HEADER}: {ALLOW_VALUE}` "
               "in the request")


def allowed(headers: Mapping[str, str]) -> bool:
    return headers.get(CHECK_HEADER, "").lower() == ALLOW_VALUE


def http_check(req: Request) -> Response:
    """Envoy's HTTP authorization request: any status other than 200 denies."""
    headers = {k.lower(): v for k, v in req.headers.items()}
    ok = allowed(headers)
    log.info("http check %s %s: %s", req.method, req.path, "allowed" if ok else "denied")
    if ok:
        return Response(200, b"", "text/plain", [(RESULT_HEADER, "allowed")])
    return Response(403, DENIED_BODY.encode(), "text/plain", [(RESULT_HEADER, "denied")])


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


class Authorizer(external_auth_pb2_grpc.AuthorizationServicer):
    """``envoy.service.auth.v3.Authorization``: HTTP requests by header, TCP connections
    by the caller's identity."""

    def __init__(self, principals: frozenset[str]) -> None:
        self.principals = principals

    def Check(self, request: external_auth_pb2.CheckRequest, context: Any
              ) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        if http.method or http.path:
            ok = allowed({k.lower(): v for k, v in http.headers.items()})
            what = f"{http.method} {http.path}"
        else:
            ok = request.attributes.source.principal in self.principals
            what = f"connection from {request.attributes.source.principal or '(no identity)'}"
        log.info("grpc check %s: %s", what, "allowed" if ok else "denied")
        if ok:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(
                    headers=[_header(RESULT_HEADER, "allowed")]))
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
                headers=[_header(RESULT_HEADER, "denied")], body=DENIED_BODY))


def _grpc_server(port: int) -> Callable[[], None]:
    """Start the gRPC authorizer on 127.0.0.1:``port``; returns how to stop it."""
    principals = frozenset(p.strip() for p in os.environ.get(
        "EXT_AUTHZ_ALLOWED_PRINCIPALS", "").split(",") if p.strip())
    rpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Authorizer(principals), rpc)
    rpc.add_insecure_port(f"127.0.0.1:{port}")
    rpc.start()
    log.info("ext-authz gRPC listening on 127.0.0.1:%d", port)
    return lambda: rpc.stop(grace=1).wait()


def main(argv: list[str]) -> None:
    """``[http|grpc]``: only that protocol, on $PORT; no argument: both (HTTP on $PORT,
    default 8000; gRPC on $GRPC_PORT, default 9000), like Istio's sample."""
    mode = argv[0] if argv else "both"
    if mode not in ("http", "grpc", "both"):
        raise SystemExit(f"usage: python -m shoal.demo.ext_authz [http|grpc]; not {mode!r}")
    if mode == "grpc":
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="ext-authz %(levelname)s %(message)s")
        stop = _grpc_server(int(os.environ.get("PORT") or 9000))
        wait_for_signal()
        stop()
        return
    grpc_port = int(os.environ.get("GRPC_PORT") or 9000)
    serve(http_check, "ext-authz", default_port=8000,
          beside=None if mode == "http" else lambda: _grpc_server(grpc_port))


if __name__ == "__main__":
    main(sys.argv[1:])
