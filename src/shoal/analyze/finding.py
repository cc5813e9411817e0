"""One finding of ``shoal analyze``: what is wrong, where, and in which file."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Finding:
    code: str  # e.g. "subset-not-found"
    resource: str  # "VirtualService default/reviews"
    path: str  # "spec.http[0].route[1].destination.subset"
    message: str
    source: str = ""  # file it came from (-f), empty for stored config

    def __str__(self) -> str:
        at = f"{self.source}: " if self.source else ""
        return f"{at}{self.resource}: {self.path}: {self.message} [{self.code}]"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
