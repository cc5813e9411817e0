"""The standalone rate-limit service's mesh identity (docs/adr/0025).

``shoal ratelimit serve`` obtains a workload certificate the way an agent does -- the
agent's own :class:`~shoal.agent.identity.WorkloadIdentity` (key made here, CSR with a
workload token, renewal at a fraction of the lifetime over mTLS) talking to the control
plane's agent listener through :class:`~shoal.agent.registration.ControlPlaneClient`.
It serves gRPC with that certificate, requires a client certificate chaining to the mesh
trust bundle, and answers only callers of its own trust domain (:meth:`callers`).

The service registers no workload, so no heartbeat tells it about a new trust bundle:
:meth:`run` asks for the bundle's version every ``bundle_poll`` seconds and lets
``WorkloadIdentity.refresh_bundle`` fetch it when it changed. Renewals and new bundles
reach gRPC through dynamic credentials (new handshakes use them).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from shoal.agent.identity import Svid, WorkloadIdentity, token_reader, token_subject
from shoal.agent.registration import ControlPlaneClient
from shoal.ca.grpc_tls import ReloadingServerCredentials
from shoal.ca.spiffe import SpiffeId
from shoal.errors import AgentError, Unavailable, ValidationError
from shoal.ratelimit.callers import CallerPolicy

log = logging.getLogger(__name__)


def service_identity(text: str, trust_domain: str) -> str:
    """``spiffe://TD/ns/NS/sa/SA`` or ``NS/SA`` (in ``trust_domain``) as a SPIFFE ID;
    ValueError names what is wrong."""
    if "://" not in text:
        ns, sep, sa = text.partition("/")
        text = f"spiffe://{trust_domain}/ns/{ns}/sa/{sa}" if sep else text
    try:
        return SpiffeId.parse(text).uri
    except ValidationError:
        raise ValueError(f"{text!r} is not NAMESPACE/SERVICE_ACCOUNT nor a workload SPIFFE "
                         "ID (spiffe://TD/ns/NS/sa/SA)") from None


@dataclass(frozen=True)
class IdentityConfig:
    agent_api: str  # https URL(s) of the control plane's agent listener (URL[,URL...])
    token_file: Path  # a workload token, e.g. `shoal token create -n shoal-system -a ratelimit`
    ca_bundle: Path  # the mesh trust bundle (verifies the control plane)
    renew_fraction: float = 0.5
    bundle_poll: float = 30.0
    obtain_timeout: float = 30.0


class ServiceIdentity:
    def __init__(self, config: IdentityConfig) -> None:
        if not config.agent_api.startswith("https://"):
            raise AgentError(f"--agent-api {config.agent_api!r} must be the control plane's "
                             "agent listener (https://...)")
        if not config.ca_bundle.is_file():
            raise AgentError(f"--ca-bundle {config.ca_bundle}: no such file")
        read_token = token_reader(None, config.token_file)
        token = read_token()
        if not token:
            raise AgentError(f"--token-file {config.token_file} is empty")
        subject = token_subject(token)
        try:
            self.spiffe = SpiffeId.parse(subject)
        except ValidationError:
            raise AgentError(f"the token's subject {subject!r} is not a workload SPIFFE "
                             "ID (create it with `shoal token create -n NS -a SA`)") from None
        self.config = config
        self.client = ControlPlaneClient(config.agent_api, token=read_token,
                                         ca_bundle=config.ca_bundle)
        self.identity = WorkloadIdentity(self.client, subject, self.spiffe.service_account,
                                         renew_fraction=config.renew_fraction)
        self._grpc = ReloadingServerCredentials(self._grpc_config)
        self.identity.subscribe(self._changed)

    def _changed(self, svid: Svid) -> None:
        self._grpc.changed()  # the next handshake fetches the new certificate / roots

    def callers(self) -> CallerPolicy:
        """Mesh identities of this service's own trust domain, over mTLS only."""
        return CallerPolicy(self.spiffe.trust_domain, allow_plaintext=False)

    async def obtain(self) -> Svid:
        """The first certificate (retried up to ``obtain_timeout``); a refused token or
        no answer in time raises."""
        if not await self.identity.initial(self.config.obtain_timeout, lambda: False):
            raise Unavailable(f"no workload certificate from {self.config.agent_api} within "
                              f"{self.config.obtain_timeout:.0f}s")
        assert self.identity.current is not None
        return self.identity.current

    def _grpc_config(self) -> grpc.ServerCertificateConfiguration:
        svid = self.identity.current
        assert svid is not None, "obtain() first"
        return grpc.ssl_server_certificate_configuration(
            [(svid.key_pem, "".join(svid.chain).encode())],
            root_certificates="".join(svid.bundle).encode())

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """TLS with the current certificate; a client certificate issued under the mesh
        trust bundle is required (the handshake fails without one)."""
        return self._grpc.credentials()

    async def run(self) -> None:
        """Renew the certificate and follow the trust bundle, for ever."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.identity.run(), name="renewal")
            tg.create_task(self._follow_bundle(), name="trust-bundle")

    async def _follow_bundle(self) -> None:
        while True:
            await asyncio.sleep(self.config.bundle_poll)
            try:
                answer = await self.client.trust_bundle()
            except (Unavailable, AgentError) as e:
                log.warning("trust bundle check failed", extra={"error": str(e)})
                continue
            await self.identity.refresh_bundle(str(answer.get("bundleVersion") or ""))

    async def aclose(self) -> None:
        await self.client.aclose()
