"""The shared store: resources in etcd, so several control planes see one config.

Layout and mapping (see docs/adr/0011-etcd-store.md):

* One etcd key per resource, ``{prefix}{kind}/{namespace}/{name}``, whose value is the
  resource's JSON document without ``resourceVersion`` (that comes from etcd).
* The store revision is etcd's own revision minus one, so an empty etcd (which is at
  revision 1) is store revision 0, and a resource's ``resource_version`` is its etcd
  ``mod_revision - 1``. etcd's revision is global to the etcd cluster: writes outside
  ``prefix`` bump it too, so store revisions are increasing but not dense.
* ``apply``/``delete`` read the keys involved, decide (expect, created/configured/
  unchanged) and commit one txn guarded by a ``mod_revision`` compare on every key read;
  if another writer got in between, the compare fails and the whole step is retried, so
  the outcome is as if it ran alone. One txn is one etcd revision (all or nothing).
* ``watch`` is an etcd watch from ``since + 1`` (with ``prev_kv`` for deletes), resumed
  from the last complete revision after a lost connection or an etcd restart.
  Compaction is etcd's own (cluster-wide); a compacted start is ``WatchExpired``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import suppress
from typing import Any

from shoal.api.meta import Resource, ResourceKey
from shoal.errors import (
    Conflict,
    NotFound,
    StoreError,
    ValidationError,
    Violation,
    WatchExpired,
)
from shoal.store.base import (
    DEFAULT_HISTORY,
    ApplyResult,
    Clock,
    Event,
    Loads,
    Record,
    Write,
    check_compact,
    check_expect,
    check_unique,
    dedupe,
    encode,
    plan_apply,
    utc_now,
)
from shoal.store.etcd_client import (
    LEASE_NOT_FOUND,
    EtcdClient,
    EtcdError,
    KeyValue,
    b64,
    prefix_end,
    revision_of,
)
from shoal.store.etcd_security import EtcdSecurity
from shoal.store.etcd_watch import Closing, EtcdWatcher

#: store revision = etcd revision - OFFSET (an empty etcd is at revision 1).
OFFSET = 1
#: etcd's default --max-txn-ops: the most operations one txn may carry.
MAX_TXN_OPS = 128
#: etcd's default --max-request-bytes (1.5 MiB): the largest request it accepts, keys and
#: values as stored (not base64); a write is held to it, less room for the request's framing.
MAX_REQUEST_BYTES = 1536 * 1024
REQUEST_FRAMING = 16 * 1024
#: etcd's answer to a request over its --max-request-bytes
TOO_LARGE = "request is too large"
#: How many times a write is retried when a concurrent writer changed a key it read.
MAX_ATTEMPTS = 20
LIST_PAGE = 1000

Ops = list[dict[str, Any]]  # txn compares / operations as etcd's JSON


class EtcdStore:
    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        prefix: str = "/shoal/",
        loads: Loads = Resource.model_validate,
        history: int | None = DEFAULT_HISTORY,
        clock: Clock = utc_now,
        client: EtcdClient | None = None,
        security: EtcdSecurity | None = None,
    ) -> None:
        """``security``: TLS files and etcd credentials (docs/adr/0023-etcd-tls-and-auth.md)
        for the client made here (a given ``client`` has its own)."""
        if not prefix.endswith("/"):
            raise StoreError(f"etcd prefix {prefix!r} must end with '/'")
        if client is not None and security is not None:
            raise StoreError("pass security to the EtcdClient given as client=")
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        self._client = client or EtcdClient(endpoints, security=security)
        self._prefix = prefix.encode()
        self._loads = loads
        self._history = history
        self._clock = clock
        self._closing = Closing()
        self._revision: int | None = None  # the newest store revision this instance saw
        self._compacted = 0  # the newest compaction this instance made or learned of

    @property
    def client(self) -> EtcdClient:
        """The etcd connection (for etcd-only features such as workload leases)."""
        return self._client

    # ------------------------------------------------------------------ keys and values

    def _key(self, key: ResourceKey) -> bytes:
        return self._prefix + f"{key.kind}/{key.namespace}/{key.name}".encode()

    def _parse_key(self, raw: bytes) -> ResourceKey | None:
        parts = raw[len(self._prefix) :].decode().split("/")
        return ResourceKey(*parts) if len(parts) == 3 else None

    def _range(self, kind: str | None, namespace: str | None = None) -> tuple[bytes, bytes]:
        start = self._prefix
        if kind is not None:
            start += f"{kind}/".encode()
            if namespace is not None:
                start += f"{namespace}/".encode()
        return start, prefix_end(start)

    def _load(self, kv: KeyValue, key: ResourceKey) -> Resource:
        try:
            doc = json.loads(kv.value)
            doc.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision - OFFSET)
            return self._loads(doc)
        except Exception as e:  # the loader is injected; any failure means bad stored data
            raise StoreError(f"stored {key} could not be loaded: {e}") from e

    def _seen(self, etcd_revision: int) -> int:
        revision = etcd_revision - OFFSET
        self._revision = max(self._revision or 0, revision)
        return revision

    def _check_open(self) -> None:
        if self._closing.closed:
            raise StoreError("the store is closed")

    # ------------------------------------------------------------------ reads

    async def get(self, key: ResourceKey) -> Resource:
        self._check_open()
        body = await self._client.range(self._key(key))
        self._seen(revision_of(body))
        kvs = body.get("kvs", [])
        if not kvs:
            raise NotFound(f"{key} not found")
        return self._load(KeyValue.parse(kvs[0]), key)

    async def list(
        self, kind: str | None = None, namespace: str | None = None
    ) -> tuple[list[Resource], int]:
        self._check_open()
        start, end = self._range(kind, namespace)
        items: list[tuple[ResourceKey, Resource]] = []
        at = 0  # the first page fixes the revision; later pages read at it
        while True:
            body = await self._client.range(start, end, revision=at, limit=LIST_PAGE)
            at = at or revision_of(body)
            kvs = [KeyValue.parse(kv) for kv in body.get("kvs", [])]
            for kv in kvs:
                key = self._parse_key(kv.key)
                if key is not None and (namespace is None or key.namespace == namespace):
                    items.append((key, self._load(kv, key)))
            if not body.get("more") or not kvs:
                break
            start = kvs[-1].key + b"\x00"
        items.sort(key=lambda item: item[0])
        return [r for _, r in items], self._seen(at)

    async def revision(self) -> int:
        self._check_open()
        body = await self._client.range(self._prefix, count_only=True)
        return self._seen(revision_of(body))

    async def _read(
        self, keys: Sequence[ResourceKey]
    ) -> tuple[dict[ResourceKey, KeyValue | None], int]:
        """The current values of ``keys`` (one read-only txn per MAX_TXN_OPS keys; the
        write that follows compares every mod revision, so chunks need not agree)."""
        found: dict[ResourceKey, KeyValue | None] = {k: None for k in keys}
        head = 0
        for i in range(0, max(len(keys), 1), MAX_TXN_OPS):
            chunk = keys[i : i + MAX_TXN_OPS]
            ops = [{"request_range": {"key": b64(self._key(k))}} for k in chunk]
            body = await self._client.txn([], ops)
            head = max(head, revision_of(body))
            for k, response in zip(chunk, body.get("responses", []), strict=True):
                kvs = response.get("response_range", {}).get("kvs", [])
                found[k] = KeyValue.parse(kvs[0]) if kvs else None
        return found, self._seen(head)

    @staticmethod
    def _records(found: Mapping[ResourceKey, KeyValue | None]) -> dict[ResourceKey, Record | None]:
        return {
            k: Record(kv.value.decode(), kv.create_revision - OFFSET, kv.mod_revision - OFFSET)
            if kv
            else None
            for k, kv in found.items()
        }

    def _compares(self, found: Mapping[ResourceKey, KeyValue | None]) -> Ops:
        return [
            {
                "key": b64(self._key(k)),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": str(kv.mod_revision if kv else 0),
            }
            for k, kv in found.items()
        ]

    # ------------------------------------------------------------------ writes

    async def lease_of(self, key: ResourceKey) -> int:
        """The etcd lease ``key`` is attached to (0: none); NotFound if it does not exist."""
        self._check_open()
        found, _ = await self._read([key])
        kv = found[key]
        if kv is None:
            raise NotFound(f"{key} not found")
        return kv.lease

    async def apply(
        self,
        resources: Sequence[Resource],
        *,
        expect: Mapping[ResourceKey, int] | None = None,
        leases: Mapping[ResourceKey, int] | None = None,
    ) -> ApplyResult:
        """The Store's apply. Beyond the protocol, ``leases`` attaches keys to etcd leases
        (etcd deletes them when the lease expires); a key not named keeps its lease."""
        self._check_open()
        keys = [r.key for r in resources]
        check_unique(keys)
        involved = dedupe([*keys, *(expect or {})])
        for _ in range(MAX_ATTEMPTS):
            found, head = await self._read(involved)
            existing = self._records(found)
            check_expect(expect, existing)
            writes = plan_apply(resources, existing, head + 1, self._clock())
            writes = [_relet(w, found, leases or {}) for w in writes]
            results = [(w.key, w.outcome) for w in writes]
            changed = sorted((w for w in writes if w.data is not None), key=lambda w: w.key)
            if not changed:
                return ApplyResult(head, results)
            ops = [self._put(w, found[w.key], leases or {}) for w in changed]
            revision = await self._commit(found, ops, explicit_lease=bool(leases))
            if revision is not None:
                return ApplyResult(revision, results)
        raise Conflict(f"gave up after {MAX_ATTEMPTS} attempts: concurrent writers kept winning")

    async def delete(
        self, keys: Sequence[ResourceKey], *, expect: Mapping[ResourceKey, int] | None = None
    ) -> int:
        self._check_open()
        keys = sorted(dedupe(keys))
        involved = dedupe([*keys, *(expect or {})])
        for _ in range(MAX_ATTEMPTS):
            found, head = await self._read(involved)
            missing = [k for k in keys if found[k] is None]
            if missing:
                raise NotFound(", ".join(str(k) for k in missing) + " not found")
            check_expect(expect, self._records(found))
            if not keys:
                return head
            ops = [{"request_delete_range": {"key": b64(self._key(k))}} for k in keys]
            revision = await self._commit(found, ops)
            if revision is not None:
                return revision
        raise Conflict(f"gave up after {MAX_ATTEMPTS} attempts: concurrent writers kept winning")

    def _put(
        self, write: Write, kv: KeyValue | None, leases: Mapping[ResourceKey, int]
    ) -> dict[str, Any]:
        assert write.data is not None
        put: dict[str, Any] = {"key": b64(self._key(write.key)), "value": b64(_stored(write.data))}
        lease = leases.get(write.key, kv.lease if kv else 0)
        if lease:
            put["lease"] = str(lease)
        return {"request_put": put}

    async def _commit(
        self,
        found: Mapping[ResourceKey, KeyValue | None],
        ops: Ops,
        *,
        explicit_lease: bool = False,
    ) -> int | None:
        """One txn of ``ops`` if no key in ``found`` changed; the new revision, or None."""
        if len(ops) > MAX_TXN_OPS or len(found) > MAX_TXN_OPS:
            # one txn is what makes a batch all-or-nothing: a larger one is refused (422),
            # never split behind the caller's back
            raise ValidationError([Violation("", (
                f"{max(len(ops), len(found))} resources in one request: the etcd store "
                f"writes at most {MAX_TXN_OPS} at once, all or none (etcd's --max-txn-ops); "
                "apply them in parts"))])
        size = _request_bytes(ops)
        if size > MAX_REQUEST_BYTES - REQUEST_FRAMING:
            raise ValidationError([Violation("", (
                f"{size / 2**20:.1f} MiB of resources in one request: the etcd store writes "
                f"at most {(MAX_REQUEST_BYTES - REQUEST_FRAMING) / 2**20:.2f} MiB at once "
                "(etcd's --max-request-bytes); apply them in parts"))])
        try:
            body = await self._client.txn(self._compares(found), ops)
        except EtcdError as e:
            if TOO_LARGE in str(e):  # an etcd whose --max-request-bytes is lower
                raise ValidationError([Violation("", (
                    f"etcd refused the write as too large ({e}): apply the resources in "
                    "parts"))]) from e
            if e.code != LEASE_NOT_FOUND or explicit_lease:
                raise
            return None  # a kept lease expired meanwhile (and took its key): read again
        if not body.get("succeeded"):
            return None
        revision = self._seen(revision_of(body))
        if self._history is not None and revision - self._history > self._compacted:
            await self._compact(revision - self._history)
        return revision

    # ------------------------------------------------------------------ history

    def watch(
        self, *, since: int | None = None, kind: str | None = None
    ) -> AsyncGenerator[Event, None]:
        self._check_open()
        start, end = self._range(kind)
        watcher = EtcdWatcher(
            client=self._client,
            key=start,
            range_end=end,
            offset=OFFSET,
            closing=self._closing,
            parse_key=self._parse_key,
            load=self._load,
            compacted=lambda: self._compacted,
        )
        return watcher.run(self._revision if since is None else since, self.revision)

    async def compact(self, revision: int) -> None:
        self._check_open()
        check_compact(revision, await self.revision())
        await self._compact(revision)

    async def _compact(self, revision: int) -> None:
        if revision <= self._compacted:
            return
        with suppress(WatchExpired):  # another instance compacted further already
            await self._client.compact(revision + OFFSET)
        self._compacted = revision

    async def close(self) -> None:
        if self._closing.closed:
            return
        self._closing.close()
        await self._client.aclose()

    async def __aenter__(self) -> EtcdStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _relet(
    write: Write, found: Mapping[ResourceKey, KeyValue | None], leases: Mapping[ResourceKey, int]
) -> Write:
    """An unchanged document that must move to another lease is written again."""
    kv = found.get(write.key)
    if write.data is not None or kv is None or leases.get(write.key, kv.lease) == kv.lease:
        return write
    return Write(write.key, "configured", _with_version(kv.value.decode()), write.create_revision)


def _with_version(data: str) -> str:
    doc = json.loads(data)
    doc.setdefault("metadata", {})["resourceVersion"] = "0"  # dropped again by _stored
    return encode(doc)


def _stored(data: str) -> bytes:
    """The document as kept in etcd: without resourceVersion (etcd's mod_revision is it)."""
    doc = json.loads(data)
    doc.get("metadata", {}).pop("resourceVersion", None)
    return encode(doc).encode()


def _request_bytes(ops: Ops) -> int:
    """The bytes of keys and values ``ops`` carry as etcd counts them (decoded)."""
    return sum(len(text) * 3 // 4 for op in ops for part in op.values()
               for field, text in part.items() if field in ("key", "value"))
