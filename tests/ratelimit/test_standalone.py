"""`shoal ratelimit serve` without the network: what it refuses to start with, and who may
read its /stats and /quotas (docs/adr/0025). The mTLS path runs in test_ratelimit_live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shoal.errors import PermissionDenied, Unauthenticated, Unavailable
from shoal.ratelimit.operators import OperatorCheck


def _check(answers: dict[str, httpx.Response], calls: list[str]) -> OperatorCheck:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/whoami"
        token = request.headers["Authorization"].removeprefix("Bearer ")
        calls.append(token)
        return answers.get(token, httpx.Response(401, json={"error": "bad token"}))

    now = [0.0]
    check = OperatorCheck("http://cp:8080/", transport=httpx.MockTransport(handle),
                          clock=lambda: now[0])
    check.now = now  # type: ignore[attr-defined]
    return check


def _who(*grants: str) -> httpx.Response:
    return httpx.Response(200, json={"user": "user:x", "grants": list(grants)})


async def test_operator_with_view_mesh_wide_only() -> None:
    calls: list[str] = []
    check = _check({"admin": _who("admin:*"), "viewer": _who("view:*"),
                    "narrow": _who("view:default", "edit:shop")}, calls)
    with pytest.raises(Unauthenticated):
        await check.require_view(None, "GET /stats")
    with pytest.raises(Unauthenticated):
        await check.require_view("Basic abc", "GET /stats")
    with pytest.raises(Unauthenticated):
        await check.require_view("Bearer forged", "GET /stats")
    with pytest.raises(PermissionDenied, match="view role mesh-wide"):
        await check.require_view("Bearer narrow", "GET /quotas")
    await check.require_view("Bearer admin", "GET /quotas")
    await check.require_view("Bearer viewer", "GET /quotas")
    assert calls == ["forged", "narrow", "admin", "viewer"]


async def test_a_verified_token_is_remembered_for_a_while() -> None:
    calls: list[str] = []
    check = _check({"viewer": _who("view:*")}, calls)
    for _ in range(3):
        await check.require_view("Bearer viewer", "GET /stats")
    assert calls == ["viewer"]
    check.now[0] = 31.0  # type: ignore[attr-defined]
    await check.require_view("Bearer viewer", "GET /stats")
    assert calls == ["viewer", "viewer"]  # asked again: a revocation applies within 30 s
    with pytest.raises(Unauthenticated):  # a refusal is never remembered as a pass
        await check.require_view("Bearer other", "GET /stats")


async def test_control_plane_unreachable_is_unavailable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    check = OperatorCheck("http://cp:1", transport=httpx.MockTransport(down))
    with pytest.raises(Unavailable):
        await check.require_view("Bearer t", "GET /stats")


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", "ratelimit", "serve", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,reason", [
    ((), "needs a mesh identity"),
    (("--insecure-plaintext", "--host", "0.0.0.0"), "loopback only"),
    (("--agent-api", "http://127.0.0.1:1", "--token-file", "/dev/null",
      "--ca-bundle", "/dev/null"), "agent listener (https://"),
])
def test_refuses_to_start_without_an_identity(args: tuple[str, ...], reason: str) -> None:
    r = _serve(*args)
    assert r.returncode == 1
    assert reason in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_token_of_no_workload_identity_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-a-jwt\n")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    r = _serve("--agent-api", "https://127.0.0.1:1", "--token-file", str(token),
               "--ca-bundle", str(bundle))
    assert r.returncode == 1 and "not a shoal token" in r.stderr, r.stderr
