"""A minimal client for etcd's v3 API through its JSON gateway (``/v3/...`` over HTTP).

Only what :class:`~shoal.store.etcd.EtcdStore` and the etcd lease registry need: range,
txn, compaction, watch streams, and leases. Keys and values are bytes on the wire
(base64 in JSON); int64 fields come back as strings; proto3 JSON leaves out fields at
their zero value (``succeeded: false``, ``type: PUT``, ``revision: 0``), so every read
here supplies the default.

Errors are mapped at this edge: a transport failure after trying every endpoint is
:class:`~shoal.errors.StoreError` (:class:`EtcdUnavailable`; a failed TLS handshake says
so), a compacted revision is :class:`~shoal.errors.WatchExpired`, a refused user or
password is :class:`EtcdAuthFailed`, any other gRPC error is :class:`EtcdError`.

Security (:class:`~shoal.store.etcd_security.EtcdSecurity`, docs/adr/0023): ``https://``
endpoints are verified against the given CA and shown the client certificate. With an
etcd user, the client authenticates (``/v3/auth/authenticate``) before its first call
and sends the token as the raw ``Authorization`` header; when etcd refuses a token
(expired, dropped by a restart, missing) it authenticates again, once per refusal, and
retries the call. If etcd has authentication off, calls go without a token until it
asks for one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from shoal.errors import StoreError, WatchExpired
from shoal.store.etcd_security import EtcdSecurity

log = logging.getLogger(__name__)

#: gRPC status code etcd uses for "required revision has been compacted".
OUT_OF_RANGE = 11
#: gRPC status code etcd uses for "requested lease not found".
LEASE_NOT_FOUND = 5
#: gRPC status code of "etcdserver: permission denied" (the user's roles lack the key).
PERMISSION_DENIED = 7
#: etcd errors after which a new token is needed (those etcd's Go client renews on): the
#: token expired (simple tokens live --auth-token-ttl idle seconds, 300 by default) or
#: was dropped (etcd restarted, auth re-enabled, password changed); none was sent (auth
#: was off when this client started); the auth store changed since it was issued.
RENEW_TOKEN = ("invalid auth token", "user name is empty", "revision of auth store is old")
AUTH_NOT_ENABLED = "authentication is not enabled"
#: etcd's JSON gateway, with --client-cert-auth and authentication on, refuses every call
#: whose client certificate has a Common Name (it would not be the user; etcd >= 3.4.x).
CN_REFUSED = "CommonName of client sending a request against gateway"


class EtcdError(StoreError):
    """etcd answered with an error."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class EtcdAuthFailed(EtcdError):
    """etcd refused the user name or password."""


class EtcdUnavailable(StoreError):
    """No etcd endpoint could be reached (or none completed a TLS handshake)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd range_end)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\x00"  # all keys


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0

    @classmethod
    def parse(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(
            unb64(kv.get("key")),
            unb64(kv.get("value")),
            int(kv.get("create_revision", 0)),
            int(kv.get("mod_revision", 0)),
            int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class WatchEvent:
    deleted: bool
    kv: KeyValue
    prev: KeyValue | None


def revision_of(body: dict[str, Any]) -> int:
    return int(body.get("header", {}).get("revision", 0))


def needs_new_token(message: str) -> bool:
    return any(reason in message for reason in RENEW_TOKEN)


def describe(endpoint: str, error: Exception) -> str:
    """A transport error for the operator: a TLS failure says TLS and what to check.

    A server certificate we cannot verify fails the handshake (ssl.SSLError under an
    httpx.ConnectError). A client certificate the server refuses (or none, with etcd's
    --client-cert-auth) fails only after it: with TLS 1.3 the server's alert comes on
    the first read (a bare ssl.SSLError) or, racing our request, as a closed connection.
    """
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
        return (f"{endpoint}: TLS handshake failed ({reason or cause}): check --etcd-ca, "
                "--etcd-cert and --etcd-key")
    closed = isinstance(error, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError))
    if closed and endpoint.lower().startswith("https://"):
        return (f"{endpoint}: TLS connection closed by etcd ({error!r}): if it requires "
                "client certificates (--client-cert-auth), check --etcd-cert and --etcd-key")
    if closed:
        return f"{endpoint}: {error!r} (if etcd serves TLS there, use https://)"
    return f"{endpoint}: {error!r}"


class EtcdClient:
    """One httpx client over a list of endpoints; a request that cannot connect is
    retried on the next endpoint (the one that worked is tried first next time)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        transport: Any = None,
        security: EtcdSecurity | None = None,
    ) -> None:
        if not endpoints:
            raise StoreError("no etcd endpoints given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._security = security or EtcdSecurity()
        self._security.check(self.endpoints)
        tls = any(e.lower().startswith("https://") for e in self.endpoints)
        self._current = 0
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
            transport=transport,
            verify=self._security.ssl_context() if tls else True,
        )
        self._token: str | None = None  # None: not authenticated yet; "": etcd's auth is off
        self._auth_lock = asyncio.Lock()

    def _order(self) -> list[str]:
        n = len(self.endpoints)
        return [self.endpoints[(self._current + i) % n] for i in range(n)]

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._call(path, body)
        except EtcdError as e:
            hint = self._hint(e)
            if hint is None:
                raise
            raise EtcdError(f"{e} ({hint})", e.code) from e

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._security.user is None:
            return await self._post(path, body)
        token = await self._current_token()
        try:
            return await self._post(path, body, token)
        except EtcdError as e:
            if not needs_new_token(str(e)):
                raise
            log.info("etcd refused the auth token (%s); authenticating again", e)
        return await self._post(path, body, await self._authenticate(stale=token))

    def _hint(self, error: EtcdError) -> str | None:
        user = self._security.user
        if CN_REFUSED in str(error):
            return ("with authentication on, etcd's JSON gateway refuses client certificates "
                    "that have a Common Name: issue --etcd-cert without one (SANs only)")
        if user is None and "user name is empty" in str(error):
            return "etcd has authentication on: give --etcd-user and its password"
        if user is not None and error.code == PERMISSION_DENIED:
            return f"etcd user {user!r}: its roles must grant readwrite on shoal's key prefix"
        return None

    async def _post(
        self, path: str, body: dict[str, Any], token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": token} if token else None  # the raw token, no "Bearer"
        errors: list[str] = []
        for i, endpoint in enumerate(self._order()):
            try:
                response = await self._http.post(endpoint + path, json=body, headers=headers)
            except (httpx.TransportError, ssl.SSLError) as e:
                errors.append(describe(endpoint, e))
                continue
            self._current = (self._current + i) % len(self.endpoints)
            return self._decode(response.status_code, response.content)
        raise EtcdUnavailable("etcd unreachable: " + "; ".join(errors))

    # ------------------------------------------------------------------ auth

    async def _current_token(self) -> str:
        return self._token if self._token is not None else await self._authenticate(None)

    async def _authenticate(self, stale: str | None) -> str:
        """A token in place of ``stale``: one request however many callers had it refused
        at once (a caller that finds it already replaced takes the new one)."""
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return self._token
            user = self._security.user
            request = {"name": user, "password": self._security.password}
            try:
                body = await self._post("/v3/auth/authenticate", request)
            except EtcdError as e:
                if AUTH_NOT_ENABLED in str(e):
                    log.warning("etcd has authentication off: calls go without a token "
                                "until it is enabled", extra={"user": user})
                    self._token = ""
                    return ""
                if "authentication failed" in str(e):
                    raise EtcdAuthFailed(f"etcd refused user {user!r}: {e} (check --etcd-user "
                                         "and its password)", e.code) from e
                raise
            self._token = str(body.get("token") or "")
            log.info("authenticated to etcd", extra={"user": user})
            return self._token

    @staticmethod
    def _decode(status: int, content: bytes) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(content) if content else {}
        except ValueError as e:
            raise EtcdError(f"etcd answered HTTP {status} with non-JSON: {content[:200]!r}") from e
        if status != 200 or "error" in data:
            code = int(data.get("code", 0))
            message = str(data.get("message") or data.get("error") or f"HTTP {status}")
            if code == OUT_OF_RANGE and "compacted" in message:
                raise WatchExpired(message)
            raise EtcdError(message, code)
        return data

    # ------------------------------------------------------------------ kv

    async def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        revision: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if count_only:
            body["count_only"] = True
        return await self.call("/v3/kv/range", body)

    async def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return await self.call(
            "/v3/kv/txn", {"compare": compare, "success": success, "failure": failure or []}
        )

    async def compact(self, revision: int) -> None:
        await self.call("/v3/kv/compaction", {"revision": str(revision)})

    # ------------------------------------------------------------------ leases

    async def lease_grant(self, ttl: int) -> int:
        body = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(body["ID"])

    async def lease_keepalive(self, lease: int) -> int:
        """Renews the lease once; returns its TTL (0 or less: the lease is gone)."""
        body = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(body.get("result", {}).get("TTL", 0))

    async def lease_revoke(self, lease: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # ------------------------------------------------------------------ watch

    @asynccontextmanager
    async def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """One watch stream: yields the ``result`` object of each watch response. The
        stream ends (or raises a transport error) when the connection is lost. etcd
        answers a refused token with a cancelled watch: authenticate again, reopen once."""
        body = {
            "create_request": {
                "key": b64(key),
                "range_end": b64(range_end),
                "start_revision": str(start_revision),
                "prev_kv": True,
            }
        }
        endpoint = self._order()[0]
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        token = await self._current_token() if self._security.user is not None else None
        try:
            for attempt in range(2):
                headers = {"Authorization": token} if token else None
                async with self._http.stream(
                    "POST", endpoint + "/v3/watch", json=body, timeout=timeout, headers=headers
                ) as response:
                    if response.status_code != 200:
                        self._decode(response.status_code, await response.aread())
                    results = self._results(response)
                    first = await anext(results, None)  # "created", or cancelled at once
                    refused = first is not None and first.get("canceled") and needs_new_token(
                        str(first.get("cancel_reason", "")))
                    if refused and token is not None and attempt == 0:
                        log.info("etcd refused the watch's auth token; authenticating again")
                        token = await self._authenticate(stale=token)
                        continue
                    yield _prepend(first, results)
                    return
        except httpx.TransportError:
            self._current = (self._current + 1) % len(self.endpoints)  # try another next
            raise
        except ssl.SSLError as e:
            self._current = (self._current + 1) % len(self.endpoints)
            raise EtcdUnavailable("etcd watch failed: " + describe(endpoint, e)) from e

    async def _results(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            message = json.loads(line)
            if "error" in message:  # the gateway lost its stream to etcd (e.g. shutdown)
                error = message["error"]
                raise EtcdUnavailable(f"etcd watch stream failed: {error.get('message', error)}")
            yield message.get("result", {})

    async def aclose(self) -> None:
        await self._http.aclose()


async def _prepend(
    first: dict[str, Any] | None, rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    if first is not None:
        yield first
    async for result in rest:
        yield result


def parse_events(result: dict[str, Any]) -> list[WatchEvent]:
    return [
        WatchEvent(
            e.get("type") == "DELETE",
            KeyValue.parse(e["kv"]),
            KeyValue.parse(e["prev_kv"]) if e.get("prev_kv") else None,
        )
        for e in result.get("events", [])
    ]
