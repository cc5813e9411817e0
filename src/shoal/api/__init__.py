"""Resource types (Istio-compatible kinds + shoal's own), parsing and validation."""

from shoal.api.kinds import KINDS, Kind, resolve_kind
from shoal.api.meta import Metadata, Resource, ResourceKey
from shoal.api.parse import (
    in_namespace,
    load_documents,
    load_resource,
    parse_document,
    parse_documents,
    parse_yaml,
)

__all__ = [
    "KINDS",
    "Kind",
    "Metadata",
    "Resource",
    "ResourceKey",
    "in_namespace",
    "load_documents",
    "load_resource",
    "parse_document",
    "parse_documents",
    "parse_yaml",
    "resolve_kind",
]
