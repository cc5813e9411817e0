"""mTLS modes, AuthorizationPolicy and RequestAuthentication enforced by real Envoys."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.generate.envoy_check import envoy_binary

from .conftest import Env

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not envoy_binary().is_file(), reason="no Envoy binary"),
]


def _do(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None,
        method: str = "GET") -> tuple[int, str]:
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def get_plain(port: int, path: str, headers: dict[str, str] | None = None,
              method: str = "GET") -> tuple[int, str]:
    return _do(http.client.HTTPConnection("127.0.0.1", port, timeout=10), path, headers,
               method)


def get_mtls(env: Env, port: int, path: str, headers: dict[str, str] | None = None,
             who: str = "alice", method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=env.tls_context(who))
    return _do(conn, path, headers, method)


def via_sidecar(env: Env, service_port: int, path: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{env.client_port}"}))
    try:
        with opener.open(f"http://web:{service_port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def refused(call) -> bool:
    try:
        call()
    except (OSError, http.client.HTTPException):
        return True
    return False


def tcp_echo(env: Env, who: str) -> bytes:
    raw = socket.create_connection(("127.0.0.1", env.ports[3]), timeout=10)
    with env.tls_context(who).wrap_socket(raw) as s:
        s.sendall(b"ping")
        try:
            return s.recv(100)
        except OSError:  # reset by the RBAC filter
            return b""


# -- peer authentication -------------------------------------------------------------------


def test_strict_refuses_plaintext_and_foreign_ca_accepts_mesh(env: Env) -> None:
    strict = env.ports[0]
    assert refused(lambda: get_plain(strict, "/public"))
    assert refused(lambda: get_mtls(env, strict, "/public", who="mallory"))
    assert get_mtls(env, strict, "/public")[0] == 200


def test_permissive_takes_both(env: Env) -> None:
    assert get_plain(env.ports[1], "/public")[0] == 200
    assert get_mtls(env, env.ports[1], "/public")[0] == 200


def test_disable_port_override_is_plaintext_only(env: Env) -> None:
    assert get_plain(env.ports[2], "/public")[0] == 200
    assert refused(lambda: get_mtls(env, env.ports[2], "/public"))


def test_client_sidecar_uses_mtls_and_app_sees_xfcc(env: Env) -> None:
    status, body = via_sidecar(env, 9080, "/alice")  # STRICT port: mTLS or nothing
    assert status == 200
    xfcc = json.loads(body)["headers"]["x-forwarded-client-cert"]
    assert "URI=spiffe://cluster.local/ns/default/sa/alice" in xfcc
    status, body = via_sidecar(env, 9082, "/public")  # DISABLE port: plaintext
    assert status == 200
    assert "x-forwarded-client-cert" not in json.loads(body)["headers"]


# -- authorization -------------------------------------------------------------------------


def test_deny_policy_blocks_exactly_what_it_names(env: Env) -> None:
    assert get_mtls(env, env.ports[0], "/deny/x") == (403, "RBAC: access denied")
    assert get_plain(env.ports[1], "/deny") == (403, "RBAC: access denied")
    assert get_mtls(env, env.ports[0], "/public/deny")[0] == 200


def test_allow_for_one_principal_denies_another(env: Env) -> None:
    assert get_mtls(env, env.ports[0], "/alice/1")[0] == 200
    assert get_mtls(env, env.ports[0], "/alice/1", who="bob") == (403, "RBAC: access denied")
    assert get_plain(env.ports[1], "/alice/1")[0] == 403  # plaintext: no principal
    assert get_mtls(env, env.ports[0], "/other")[0] == 403  # matches no ALLOW rule


def test_tcp_deny(env: Env) -> None:
    assert tcp_echo(env, "alice") == b"ping"
    assert tcp_echo(env, "bob") == b""


# -- request authentication ----------------------------------------------------------------


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_jwt(env: Env) -> None:
    p = env.ports[1]
    good = env.issuer.token("user-1")
    assert get_plain(p, "/public")[0] == 200  # no token: authn passes, authz decides
    assert get_plain(p, "/jwt")[0] == 403  # ... and this rule needs a request principal
    status, body = get_plain(p, "/jwt", _bearer(good))
    assert status == 200
    headers = json.loads(body)["headers"]
    assert headers["x-jwt-sub"] == "user-1"
    assert "authorization" not in headers  # forwardOriginalToken: false
    expired = env.issuer.token(expires_in=-600)  # Envoy allows 60 s of clock skew
    assert get_plain(p, "/jwt", _bearer(expired))[0] == 401
    assert get_plain(p, "/public", _bearer(env.issuer.token(issuer="https://evil")))[0] == 401
    assert get_plain(p, "/public", _bearer("not-a-jwt"))[0] == 401


def test_claim_based_when(env: Env) -> None:
    p = env.ports[1]
    admins = env.issuer.token("u", groups=["admins", "x"])
    users = env.issuer.token("u", groups=["users"])
    assert get_plain(p, "/claims", _bearer(admins))[0] == 200
    assert get_plain(p, "/claims", _bearer(users))[0] == 403
    assert get_plain(p, "/claims")[0] == 403
