"""A minimal client for etcd's v3 API through its JSON gateway (``/v3/...`` over HTTP).

Only what :class:`~shoal.store.etcd.EtcdStore` and the etcd lease registry need: range,
txn, compaction, watch streams, and leases. Keys and values are bytes on the wire
(base64 in JSON); int64 fields come back as strings; proto3 JSON leaves out fields at
their zero value (``succeeded: false``, ``type: PUT``, ``revision: 0``), so every read
here supplies the default.

Errors are mapped at this edge: a transport failure after trying every endpoint is
:class:`~shoal.errors.StoreError` (:class:`EtcdUnavailable`), a compacted revision is
:class:`~shoal.errors.WatchExpired`, any other gRPC error is :class:`EtcdError`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from shoal.errors import StoreError, WatchExpired

#: gRPC status code etcd uses for "required revision has been compacted".
OUT_OF_RANGE = 11
#: gRPC status code etcd uses for "requested lease not found".
LEASE_NOT_FOUND = 5


class EtcdError(StoreError):
    """etcd answered with an error."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(StoreError):
    """No etcd endpoint could be reached."""


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


class EtcdClient:
    """One httpx client over a list of endpoints; a request that cannot connect is
    retried on the next endpoint (the one that worked is tried first next time)."""

    def __init__(
        self, endpoints: Sequence[str], *, timeout: float = 5.0, transport: Any = None
    ) -> None:
        if not endpoints:
            raise StoreError("no etcd endpoints given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
            transport=transport,
        )

    def _order(self) -> list[str]:
        n = len(self.endpoints)
        return [self.endpoints[(self._current + i) % n] for i in range(n)]

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors: list[str] = []
        for i, endpoint in enumerate(self._order()):
            try:
                response = await self._http.post(endpoint + path, json=body)
            except httpx.TransportError as e:
                errors.append(f"{endpoint}: {e!r}")
                continue
            self._current = (self._current + i) % len(self.endpoints)
            return self._decode(response.status_code, response.content)
        raise EtcdUnavailable("etcd unreachable: " + "; ".join(errors))

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
        stream ends (or raises a transport error) when the connection is lost."""
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
        try:
            async with self._http.stream(
                "POST", endpoint + "/v3/watch", json=body, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    self._decode(response.status_code, await response.aread())
                yield self._results(response)
        except httpx.TransportError:
            self._current = (self._current + 1) % len(self.endpoints)  # try another next
            raise

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


def parse_events(result: dict[str, Any]) -> list[WatchEvent]:
    return [
        WatchEvent(
            e.get("type") == "DELETE",
            KeyValue.parse(e["kv"]),
            KeyValue.parse(e["prev_kv"]) if e.get("prev_kv") else None,
        )
        for e in result.get("events", [])
    ]
