"""SPIFFE IDs of workloads: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.errors import ValidationError, Violation

_ID = re.compile(r"^spiffe://([a-z0-9.\-_]+)/ns/([a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                 r"/sa/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")


@dataclass(frozen=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    @staticmethod
    def parse(text: str) -> SpiffeId:
        m = _ID.match(text)
        if not m:
            raise ValidationError([Violation(
                "", f"{text!r} is not a workload SPIFFE ID (spiffe://TD/ns/NS/sa/SA)")])
        return SpiffeId(m.group(1), m.group(2), m.group(4))

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri
