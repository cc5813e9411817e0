"""``shoal logs`` without the access-log stream: the control plane reads a service's
access logs from its workloads' agents (docs/operations.md, "Access logs").

The protocol between the control plane and an agent (served by
:mod:`shoal.agent.access_logs` on the agent's endpoint, docs/adr/0028)::

  GET https://<workload address>:<shoal.io/metrics-port>/logs?tail=N&cursor=C
  -> {"entries": [...oldest first], "cursor": "<opaque>"}

over mTLS. The control plane presents its serving certificate, the only client certificate
the agent answers on this route (:func:`shoal.agent.metrics.check_control_plane`), and
verifies the agent's certificate against the mesh roots under the workloads' DNS name
and then as the workload's own SPIFFE ID (its service account), so no workload answers
for another.

:class:`AgentLogs` asks every workload of the service at once with a short timeout,
merges their entries by ``start_time``, keeps the newest ``tail`` and returns one
composite cursor (every agent's own, as base64url JSON) so a follower gets only newer
entries; a workload that does not answer is listed in ``unreachable`` and keeps its
cursor for the next call. With ``wait`` it asks again about once a second until
something new arrives or the wait is over (the long poll of ``shoal logs -f``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from shoal.ca.authority import WORKLOAD_DNS_NAME
from shoal.ca.peer_cert import read_certificate
from shoal.ca.spiffe import SpiffeId
from shoal.errors import ShoalError, Unavailable
from shoal.multicluster.labels import REMOTE_ANNOTATION
from shoal.netaddr import host_port
from shoal.registry.snapshot import REGISTERED_BY, MeshSnapshot
from shoal.telemetry.discovery import metrics_port
from shoal.xds.node import node_id

LOGS_PATH = "/logs"
MAX_TAIL = 1000  # entries per answer, an agent's and the control plane's
TIMEOUT = 3.0  # per agent and round
MAX_PARALLEL = 64  # agents asked at once (a large service is asked in waves)
POLL_INTERVAL = 1.0
MAX_WAIT = 30.0
MAX_ANSWER_BYTES = 16 << 20  # an agent's answer: MAX_TAIL entries of a few KiB at most
MAX_CURSOR = 64 << 10

Entry = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One workload's agent endpoint, and the identity its certificate must carry."""

    namespace: str
    workload: str
    address: str  # HOST:PORT
    identity: str  # SPIFFE ID

    @property
    def key(self) -> str:
        """Its node id: the reporter of its entries, its part of the composite cursor."""
        return node_id(self.workload, self.namespace)


# (target, query parameters) -> the agent's JSON answer; Unavailable when there is none
Fetch = Callable[[Target, dict[str, str]], Awaitable[dict[str, Any]]]


def _unreachable(namespace: str, workload: str, reason: str) -> dict[str, str]:
    return {"workload": workload, "namespace": namespace, "reason": reason}


def targets(mesh: MeshSnapshot, service: str, namespace: str | None = None
            ) -> tuple[list[Target], list[dict[str, str]]]:
    """The local agent-registered workloads of ``service`` (a name or ``name.namespace``;
    their ``app`` label, as for Prometheus' targets), in ``namespace`` if given: those
    that registered an endpoint, and those that did not (as ``unreachable``)."""
    name, _, in_name = service.partition(".")
    if namespace and in_name and namespace != in_name:
        return [], []
    wanted = namespace or in_name
    found: list[Target] = []
    missing: list[dict[str, str]] = []
    for w in mesh.workloads:
        meta = w.metadata
        if w.spec.labels.get("app") != name or (wanted and meta.namespace != wanted) \
                or meta.annotations.get(REGISTERED_BY) != "agent" \
                or REMOTE_ANNOTATION in meta.annotations:  # no agent of ours to ask
            continue
        port = metrics_port(w)
        if port is None:
            missing.append(_unreachable(meta.namespace, meta.name,
                                        "its agent serves no endpoint (no workload identity, "
                                        "or --metrics-port off)"))
            continue
        identity = SpiffeId(mesh.config.trust_domain, meta.namespace, w.spec.service_account)
        found.append(Target(meta.namespace, meta.name, host_port(w.spec.address, port),
                            identity.uri))
    found.sort(key=lambda t: (t.namespace, t.workload))
    return found, missing


def encode_cursor(cursors: Mapping[str, str]) -> str:
    raw = json.dumps(dict(sorted(cursors.items())), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> dict[str, str]:
    """ValueError unless ``text`` is "" or a cursor :func:`encode_cursor` made."""
    if not text:
        return {}
    if len(text) > MAX_CURSOR:
        raise ValueError("the cursor is too long")
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, RecursionError):  # binascii.Error, JSONDecodeError, bad UTF-8
        raise ValueError("not a cursor this control plane returned") from None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise ValueError("not a cursor this control plane returned")
    return doc


def _answer(target: Target, doc: Any, tail: int) -> tuple[list[Entry], str]:
    """The entries and cursor of an agent's answer; only entries it reported itself."""
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list) \
            or not isinstance(doc.get("cursor"), str):
        raise Unavailable("its answer is not a page of access-log entries")
    entries = [e for e in doc["entries"][-tail:]
               if isinstance(e, dict) and e.get("reporter") == target.key]
    return entries, doc["cursor"]


class AgentLogs:
    """The fan-out: ``fetch`` asks one agent (:class:`HttpsAgents` in the control plane)."""

    def __init__(self, mesh: Callable[[], MeshSnapshot], fetch: Fetch, *,
                 timeout: float = TIMEOUT, poll_interval: float = POLL_INTERVAL) -> None:
        self._mesh = mesh
        self._fetch = fetch
        self._timeout = timeout
        self._poll = poll_interval
        self._parallel = asyncio.Semaphore(MAX_PARALLEL)

    async def query(self, service: str, namespace: str | None = None, *, tail: int = 100,
                    cursor: str = "", wait: float = 0.0) -> dict[str, Any]:
        """``{"entries": [...oldest first], "cursor": "...", "unreachable": [...]}``;
        ``tail`` 0 or less: :data:`MAX_TAIL`. ValueError for a cursor not made here."""
        cursors = decode_cursor(cursor)
        tail = MAX_TAIL if tail <= 0 else min(tail, MAX_TAIL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (min(wait, MAX_WAIT) if wait > 0 else 0.0)  # NaN: 0
        while True:
            entries, cursors, unreachable = await self._round(service, namespace, tail,
                                                              cursors)
            left = deadline - loop.time()
            if entries or left <= 0:
                break
            await asyncio.sleep(min(self._poll, left))
        return {"entries": entries, "cursor": encode_cursor(cursors),
                "unreachable": unreachable}

    async def _round(self, service: str, namespace: str | None, tail: int,
                     cursors: dict[str, str]
                     ) -> tuple[list[Entry], dict[str, str], list[dict[str, str]]]:
        found, unreachable = targets(self._mesh(), service, namespace)
        answers: dict[str, tuple[list[Entry], str] | str] = {}
        async with asyncio.TaskGroup() as tg:
            for t in found:
                tg.create_task(self._ask(t, tail, cursors.get(t.key), answers))
        entries: list[Entry] = []
        kept: dict[str, str] = {}  # workloads gone from the mesh leave the cursor
        for t in found:
            answer = answers[t.key]
            if isinstance(answer, str):
                unreachable.append(_unreachable(t.namespace, t.workload, answer))
                if t.key in cursors:
                    kept[t.key] = cursors[t.key]
                continue
            entries.extend(answer[0])
            kept[t.key] = answer[1]
        entries.sort(key=lambda e: str(e.get("start_time") or ""))  # stable: file order
        return entries[-tail:], kept, unreachable

    async def _ask(self, target: Target, tail: int, cursor: str | None,
                   answers: dict[str, tuple[list[Entry], str] | str]) -> None:
        params = {"tail": str(tail), **({"cursor": cursor} if cursor else {})}
        try:
            async with self._parallel, asyncio.timeout(self._timeout):
                doc = await self._fetch(target, params)
            answers[target.key] = _answer(target, doc, tail)
        except TimeoutError:
            answers[target.key] = f"no answer within {self._timeout:g}s"
        except ShoalError as e:
            answers[target.key] = str(e)


class HttpsAgents:
    """:data:`Fetch` over HTTPS: ``ssl_context()`` presents the control plane's serving
    certificate and trusts the mesh roots (:meth:`ServingCertificate.client_context`)."""

    def __init__(self, ssl_context: Callable[[], ssl.SSLContext], *,
                 timeout: float = TIMEOUT, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._ssl = ssl_context
        self._timeout = timeout
        self._max_bytes = max_bytes

    async def __call__(self, target: Target, params: dict[str, str]) -> dict[str, Any]:
        url = f"https://{target.address}{LOGS_PATH}"
        try:
            async with httpx.AsyncClient(verify=self._ssl(), timeout=self._timeout,
                                         trust_env=False) as http, \
                    http.stream("GET", url, params=params,
                                extensions={"sni_hostname": WORKLOAD_DNS_NAME}) as r:
                peer = _peer_identity(r)
                if peer != target.identity:
                    raise Unavailable(f"answered as {peer}, not as {target.identity}")
                body = await _read(r, self._max_bytes)
                if r.status_code != 200:
                    raise Unavailable(f"answered {r.status_code}: {_error_of(body)}")
            return dict(json.loads(body))
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as e:
            raise Unavailable(str(e) or type(e).__name__) from None
        except (ValueError, TypeError):
            raise Unavailable("its answer is not JSON") from None


def _peer_identity(response: httpx.Response) -> str:
    """The SPIFFE ID of the certificate the server presented (its problem if none)."""
    stream = response.extensions.get("network_stream")
    tls = stream.get_extra_info("ssl_object") if stream is not None else None
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    if not der:
        return "no certificate"
    cert = read_certificate(der)
    return cert.identity.uri if cert.identity is not None else cert.problem


async def _read(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise Unavailable(f"its answer is larger than {limit} bytes")
    return bytes(body)


def _error_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode(errors="replace")
