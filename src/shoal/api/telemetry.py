"""shoal's telemetry kinds (group telemetry.shoal.io): ServiceLevelObjective.

    apiVersion: telemetry.shoal.io/v1alpha1
    kind: ServiceLevelObjective
    metadata: {name: reviews-availability}
    spec:
      service: reviews                # a host, as in a VirtualService
      sli: {availability: {}}         # or {latency: {thresholdMs: 250}}
      target: 99.9                    # percent of good requests
      window: 30d
      alerting:                       # optional; Google SRE multi-window defaults
        burnRates:
        - {longWindow: 1h, shortWindow: 5m, factor: 14.4}
        - {longWindow: 6h, shortWindow: 30m, factor: 6}
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from shoal.api.meta import DNS_SUBDOMAIN, Model

TELEMETRY = "telemetry.shoal.io/v1alpha1"

_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)(d|h|m|s)$")
_UNIT = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def window_seconds(text: str) -> float:
    """"30d", "6h", "5m", "90s" -> seconds."""
    m = _WINDOW.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a window such as '30d', '6h', '5m' or '90s'")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _window(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a duration string such as '30d', '1h' or '5m'")
    if window_seconds(v) <= 0:
        raise ValueError("must be greater than zero")
    return v


# Like api.types.Duration, plus days ("30d"): SLO windows are long.
Window = Annotated[str, BeforeValidator(_window)]


class Availability(Model):
    """Good = any response that is not a 5xx."""


class Latency(Model):
    """Good = a response faster than ``thresholdMs``."""

    threshold_ms: float = Field(gt=0)


class Sli(Model):
    availability: Availability | None = None
    latency: Latency | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Sli:
        chosen = [k for k in ("availability", "latency") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("exactly one of availability or latency must be set")
        return self

    @property
    def kind(self) -> str:
        return "availability" if self.availability is not None else "latency"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


class BurnRate(Model):
    """Alert when the error budget burns ``factor`` times faster than the window allows,
    over both the long and the short window (the short one makes the alert reset fast)."""

    long_window: Window
    short_window: Window
    factor: float = Field(gt=0)
    severity: Severity = Severity.CRITICAL

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnRate:
        if window_seconds(self.short_window) >= window_seconds(self.long_window):
            raise ValueError("shortWindow must be shorter than longWindow")
        return self


DEFAULT_BURN_RATES: tuple[BurnRate, ...] = (
    BurnRate(long_window="1h", short_window="5m", factor=14.4),
    BurnRate(long_window="6h", short_window="30m", factor=6),
)


class Alerting(Model):
    burn_rates: list[BurnRate] | None = Field(default=None, min_length=1)


def _host(v: Any) -> Any:
    if isinstance(v, str) and (not DNS_SUBDOMAIN.match(v) or len(v) > 253):
        raise ValueError("must be a service host such as 'reviews' or "
                         "'reviews.default.svc.cluster.local'")
    return v


class ServiceLevelObjectiveSpec(Model):
    service: Annotated[str, BeforeValidator(_host)]
    sli: Sli
    target: float = Field(gt=0, lt=100)
    window: Window = "30d"
    alerting: Alerting = Field(default_factory=Alerting)

    @property
    def burn_rates(self) -> tuple[BurnRate, ...]:
        return tuple(self.alerting.burn_rates or DEFAULT_BURN_RATES)

    @property
    def window_seconds(self) -> float:
        return window_seconds(self.window)
