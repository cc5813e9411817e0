"""The one exception tree of shoal.

Every error that shoal raises on purpose derives from :class:`ShoalError`. Code at the
edges (REST handlers, gRPC servicers, the CLI) maps these to HTTP/gRPC status codes or a
one-line message and a non-zero exit; nothing inside the package catches a broad
``Exception`` to "log and carry on".

    ShoalError
    ├── ValidationError      bad config; carries every Violation with its field path
    ├── NotFound             a resource, proxy or workload that does not exist
    ├── Conflict             optimistic-concurrency failure (stale resourceVersion)
    ├── StoreError           the config store failed (I/O, corruption, compaction)
    │   └── WatchExpired     a watch asked for history the store no longer keeps
    ├── Unavailable          a peer (control plane, Envoy admin) could not be reached
    ├── EnvoyError           Envoy could not be located, started or configured
    ├── AgentError           the per-workload agent failed to do its job
    ├── Unauthenticated      missing, invalid or expired credential (token)
    ├── PermissionDenied     a valid credential that does not allow the request
    └── CaError              the certificate authority cannot load or use its keys
"""

from __future__ import annotations

from dataclasses import dataclass


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""


@dataclass(frozen=True)
class Violation:
    """One problem with one field of one document."""

    path: str
    message: str
    document: str = ""  # e.g. "VirtualService default/reviews" or "doc 2"

    def __str__(self) -> str:
        where = f"{self.document}: " if self.document else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class ValidationError(ShoalError):
    """Config was rejected; ``violations`` lists every problem found, not only the first."""

    def __init__(self, violations: list[Violation]):
        self.violations = list(violations)
        n = len(self.violations)
        head = f"{n} violation{'s' if n != 1 else ''}"
        super().__init__(head + ": " + "; ".join(str(v) for v in self.violations))


class NotFound(ShoalError):
    """The named thing does not exist."""


class Conflict(ShoalError):
    """A write was based on a stale revision."""


class StoreError(ShoalError):
    """The config store failed."""


class WatchExpired(StoreError):
    """A watch asked to resume from a revision older than the store keeps."""


class Unavailable(ShoalError):
    """A peer could not be reached."""


class EnvoyError(ShoalError):
    """Envoy could not be located, started or configured."""


class AgentError(ShoalError):
    """The per-workload agent failed."""


class Unauthenticated(ShoalError):
    """A request carried no credential, or one that is invalid or expired (HTTP 401)."""


class PermissionDenied(ShoalError):
    """A valid credential that does not allow what was asked (HTTP 403)."""


class CaError(ShoalError):
    """The certificate authority could not load, create or use its keys and certificates."""
