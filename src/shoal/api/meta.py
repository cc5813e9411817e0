"""Common parts of every resource: apiVersion, kind, metadata, spec.

Specs are pydantic models with camelCase aliases (Istio YAML spelling) that forbid
unknown fields, so a misspelt or unsupported field is an error that names it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Model(BaseModel):
    """Base for every spec part: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=False,
    )

    # Istio fields shoal knows but does not implement yet: setting one is an error
    # naming the field ("not supported by shoal"), instead of a silent no-op.
    unsupported: ClassVar[frozenset[str]] = frozenset()

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase, without fields left at their defaults."""
        return self.model_dump(by_alias=True, exclude_defaults=True, mode="json")


class Metadata(Model):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Set by the store: the store revision at which this resource was last written.
    resource_version: str | None = None
    creation_timestamp: str | None = None
    # Set by the store: 1 when created, +1 each time the spec changes (Kubernetes'
    # metadata.generation; Gateway API status reports it as observedGeneration)
    generation: int | None = None

    def dump(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, **{
            k: v for k, v in super().dump().items() if k not in ("name", "namespace")}}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_SUBDOMAIN.match(v) or len(v) > 253:
            raise ValueError(
                "must be a lowercase DNS-1123 name (a-z, 0-9, '-' and '.', "
                "starting and ending with a letter or digit)"
            )
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError("must be a lowercase DNS-1123 label (a-z, 0-9 and '-')")
        return v


class Resource(Model):
    """One config document. ``spec`` is typed per kind (see :mod:`shoal.api.kinds`)."""

    api_version: str
    kind: str
    metadata: Metadata
    spec: Any

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def revision(self) -> int:
        return int(self.metadata.resource_version or 0)

    def with_revision(self, revision: int) -> Resource:
        meta = self.metadata.model_copy(update={"resource_version": str(revision)})
        return self.model_copy(update={"metadata": meta})

    def dump(self) -> dict[str, Any]:
        out = {
            "apiVersion": self.api_version,
            # documents write a group-qualified kind (api/kinds.py) without its group
            "kind": self.kind.split(".", 1)[0],
            "metadata": self.metadata.dump(),
            "spec": self.spec.dump() if isinstance(self.spec, Model) else self.spec,
        }
        return out


def oldest_first(r: Resource) -> tuple[str, str, str]:
    """Sort key for Istio's conflict rule: the oldest resource wins; equal creation times
    are ordered by name, then namespace (what istiod does), so the order never depends on
    the order resources were listed in."""
    return (r.metadata.creation_timestamp or "", r.metadata.name, r.metadata.namespace)


class ResourceKey(tuple):
    """(kind, namespace, name): the identity of a resource in the store."""

    __slots__ = ()

    def __new__(cls, kind: str, namespace: str, name: str) -> ResourceKey:
        return super().__new__(cls, (kind, namespace, name))

    @property
    def kind(self) -> str:
        return self[0]

    @property
    def namespace(self) -> str:
        return self[1]

    @property
    def name(self) -> str:
        return self[2]

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"
