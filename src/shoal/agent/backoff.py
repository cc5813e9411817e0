"""Capped exponential back-off with a little jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.1  # +- fraction of the delay
    _next: float = field(default=0.0, init=False)

    def next(self) -> float:
        """The delay to wait now; each call doubles the following one up to ``maximum``."""
        base = self._next or self.initial
        self._next = min(self.maximum, base * self.factor)
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self._next = 0.0
