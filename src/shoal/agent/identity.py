"""The workload's identity: a private key made here (never sent, never written), a CSR to
the control plane's CA with the attestation token, renewal at a fraction of the lifetime.

Subscribers (the SDS server) are told whenever the certificate or the trust bundle
changes. While the control plane is away the current certificate keeps being served,
renewal is retried with capped back-off, and the log gets louder as expiry nears.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shoal.agent.backoff import Backoff
from shoal.agent.registration import ControlPlaneClient, Refused
from shoal.ca import pki
from shoal.ca.csr import make_csr
from shoal.errors import AgentError, Unavailable

log = logging.getLogger("shoal.agent.identity")


@dataclass(frozen=True)
class Svid:
    spiffe_id: str
    chain: tuple[str, ...]  # PEM, leaf first
    key_pem: bytes
    bundle: tuple[str, ...]  # PEM roots
    bundle_version: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    received: dt.datetime  # not_before is backdated for clock skew; renewal counts from here

    @property
    def version(self) -> str:
        return f"{self.serial[:12]}-{self.bundle_version}"

    def report(self) -> dict[str, Any]:
        return {"spiffeId": self.spiffe_id, "serial": self.serial,
                "notBefore": self.not_before.isoformat(), "notAfter": self.not_after.isoformat(),
                "bundleVersion": self.bundle_version}


def token_subject(token: str) -> str:
    """The SPIFFE ID a token is for (its ``sub``; verified by the CA, only read here)."""
    try:
        payload = token.split(".")[1]
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(body["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise AgentError("the token is not a shoal token (cannot read its subject)") from None


def token_reader(token: str | None, token_file: Path | None) -> Callable[[], str | None]:
    """Read the token from the file on each use (it may be replaced), else the literal."""
    if token_file is None:
        return lambda: token
    path = token_file

    def read() -> str | None:
        try:
            return path.read_text().strip() or None
        except OSError as e:
            raise AgentError(f"--token-file {path}: {e.strerror or e}") from None

    return read


class WorkloadIdentity:
    def __init__(self, client: ControlPlaneClient, spiffe_id: str, workload: str, *,
                 renew_fraction: float = 0.5, backoff: Backoff | None = None) -> None:
        if not 0.05 <= renew_fraction <= 0.95:
            raise AgentError("--renew-fraction must be within 0.05..0.95")
        self.client = client
        self.spiffe_id = spiffe_id
        self.workload = workload
        self.renew_fraction = renew_fraction
        self.backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self.current: Svid | None = None
        self.renewals = 0
        self._subscribers: list[Callable[[Svid], None]] = []

    def subscribe(self, callback: Callable[[Svid], None]) -> None:
        self._subscribers.append(callback)

    def _publish(self, svid: Svid) -> None:
        self.current = svid
        self.client.trust(list(svid.bundle))
        # renewals, registration and heartbeats authenticate with it from now on (mTLS)
        self.client.present(list(svid.chain), svid.key_pem, svid.not_after.timestamp())
        for cb in list(self._subscribers):
            cb(svid)

    async def obtain(self) -> Svid:
        """One CSR round trip; raises Unavailable / Refused / AgentError."""
        key = pki.new_key()
        answer = await self.client.sign(make_csr(key, self.spiffe_id), self.workload)
        chain = tuple(answer.get("certChain") or ())
        if not chain:
            raise AgentError("the CA answered without a certificate chain")
        leaf = pki.load_certs(chain[0])[0]
        if leaf.public_key() != key.public_key() or pki.uri_sans(leaf) != [self.spiffe_id]:
            raise AgentError("the CA answered with a certificate that is not for this request")
        svid = Svid(self.spiffe_id, chain, pki.key_pem(key),
                    tuple(answer.get("trustBundle") or ()), str(answer.get("bundleVersion", "")),
                    format(leaf.serial_number, "x"), leaf.not_valid_before_utc,
                    leaf.not_valid_after_utc, pki.now())
        self._publish(svid)
        log.info("workload certificate obtained", extra={
            "spiffe_id": self.spiffe_id, "serial": svid.serial,
            "not_after": svid.not_after.isoformat()})
        return svid

    async def initial(self, timeout: float, stop: Callable[[], bool]) -> bool:
        """Obtain a first certificate, retrying up to ``timeout``; a refused token is fatal."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not stop():
            try:
                await self.obtain()
                self.backoff.reset()
                return True
            except Refused as e:
                raise AgentError(f"cannot obtain a workload certificate: {e}") from None
            except (Unavailable, AgentError) as e:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    log.warning("no workload certificate yet; starting Envoy anyway (it waits "
                                "for its secrets)", extra={"error": str(e)})
                    return False
                delay = min(self.backoff.next(), left)
                log.warning("certificate request failed, retrying", extra={
                    "error": str(e), "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay)
        return False

    def _renew_in(self) -> float:
        svid = self.current
        if svid is None:
            return 0.0
        lifetime = (svid.not_after - svid.received).total_seconds()
        at = svid.received + dt.timedelta(
            seconds=lifetime * self.renew_fraction * random.uniform(0.9, 1.0))
        return max(0.0, (at - pki.now()).total_seconds())

    async def run(self) -> None:
        """Renew for ever; retry with capped back-off while the CA is unreachable."""
        while True:
            await asyncio.sleep(self._renew_in())
            try:
                await self.obtain()
                self.renewals += 1
                self.backoff.reset()
            except (Unavailable, AgentError) as e:
                self._complain(e)
                await asyncio.sleep(self.backoff.next())

    def _complain(self, e: Exception) -> None:
        left = (self.current.not_after - pki.now()).total_seconds() if self.current else 0
        level = logging.ERROR if left < 300 else logging.WARNING
        log.log(level, "certificate renewal failed; still serving the current certificate"
                if left > 0 else "certificate renewal failed and the certificate HAS EXPIRED",
                extra={"error": str(e), "expires_in_s": int(left)})

    async def refresh_bundle(self, version: str) -> None:
        """Fetch the trust bundle when the control plane reports another version."""
        svid = self.current
        if svid is None or version == svid.bundle_version:
            return
        try:
            answer = await self.client.trust_bundle()
        except (Unavailable, AgentError) as e:
            log.warning("trust bundle refresh failed", extra={"error": str(e)})
            return
        bundle = tuple(answer.get("trustBundle") or ())
        if bundle:
            self._publish(replace(svid, bundle=bundle,
                                  bundle_version=str(answer.get("bundleVersion", version))))
            log.info("trust bundle updated", extra={"roots": len(bundle),
                                                    "bundle_version": version})
