"""SLO evaluation: attainment, error budget, multi-window burn rates and alert state.

For a ServiceLevelObjective with target T (percent), the error budget is the fraction
``1 - T/100`` of requests that may be bad. Over a window W:

* attainment      = good / total (percent)
* budget spent    = bad / (budget * total); remaining = 1 - spent (negative: overspent)
* burn rate(w)    = (bad / total over w) / budget: 1 spends the budget exactly in W

An alert pair (longWindow, shortWindow, factor) *fires* when both windows burn faster
than ``factor`` (Google SRE workbook, "multiwindow, multi-burn-rate alerts"). The state is
CRITICAL when a pair of severity critical fires; WARNING when a warning pair fires, a
long window burns above its factor while the short one has already recovered, or the
budget is spent; OK otherwise.

The metrics store keeps a bounded history: the in-memory ring 6 h since the control plane
started, the durable store (:mod:`shoal.telemetry.history`) 36 days across restarts;
``observedSeconds`` says how much of the SLO window the numbers cover.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shoal.api.meta import Resource
from shoal.api.telemetry import ServiceLevelObjectiveSpec, Severity, window_seconds
from shoal.telemetry.model import MetricsStore

DEFAULT_RETENTION = 6 * 3600.0


class AlertState(StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


def service_fqdn(host: str, namespace: str, domain: str = "cluster.local") -> str:
    """A host as written in an SLO (Istio semantics) -> the FQDN edges are keyed by."""
    parts = host.lower().rstrip(".").split(".")
    if len(parts) == 1:
        return f"{parts[0]}.{namespace}.svc.{domain}"
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        return f"{parts[0]}.{parts[1]}.svc.{domain}"
    return ".".join(parts)


@dataclass(frozen=True)
class BurnRateStatus:
    long_window: str
    short_window: str
    factor: float
    severity: Severity
    long_burn: float
    short_burn: float

    @property
    def firing(self) -> bool:
        return self.long_burn > self.factor and self.short_burn > self.factor

    def to_dict(self) -> dict[str, Any]:
        return {"longWindow": self.long_window, "shortWindow": self.short_window,
                "factor": self.factor, "severity": self.severity.value,
                "longBurnRate": round(self.long_burn, 4),
                "shortBurnRate": round(self.short_burn, 4), "firing": self.firing}


@dataclass(frozen=True)
class SloStatus:
    name: str
    namespace: str
    service: str  # FQDN
    sli: str  # availability | latency
    threshold_ms: float | None
    target: float
    window: str
    window_seconds: float
    observed_seconds: float
    good: float
    total: float
    burn_rates: tuple[BurnRateStatus, ...]
    state: AlertState
    reason: str

    @property
    def budget(self) -> float:
        return 1.0 - self.target / 100.0

    @property
    def attainment(self) -> float | None:
        return 100.0 * self.good / self.total if self.total else None

    @property
    def bad(self) -> float:
        return max(self.total - self.good, 0.0)

    @property
    def allowed_bad(self) -> float:
        return self.budget * self.total

    @property
    def budget_remaining(self) -> float:
        """Fraction of the error budget left (1 = untouched, < 0 = overspent)."""
        return 1.0 - self.bad / self.allowed_bad if self.allowed_bad else 1.0

    def to_dict(self) -> dict[str, Any]:
        att = self.attainment
        return {
            "name": self.name, "namespace": self.namespace, "service": self.service,
            "sli": self.sli, "thresholdMs": self.threshold_ms, "target": self.target,
            "window": self.window, "windowSeconds": self.window_seconds,
            "observedSeconds": round(self.observed_seconds, 1),
            "good": round(self.good, 3), "total": round(self.total, 3),
            "attainment": None if att is None else round(att, 5),
            "errorBudget": {
                "fraction": round(self.budget, 6),
                "allowedRequests": round(self.allowed_bad, 3),
                "spentRequests": round(self.bad, 3),
                "remainingRequests": round(self.allowed_bad - self.bad, 3),
                "remaining": round(self.budget_remaining, 5),
            },
            "burnRates": [b.to_dict() for b in self.burn_rates],
            "state": self.state.value, "reason": self.reason,
        }


def _burn(metrics: MetricsStore, fqdn: str, window: float, threshold: float | None,
          budget: float, now: float) -> float:
    good, total = metrics.good_total(fqdn, window, latency_threshold_ms=threshold, now=now)
    if not total:
        return 0.0
    return (max(total - good, 0.0) / total) / budget


def _state(burns: Sequence[BurnRateStatus], remaining: float, total: float
           ) -> tuple[AlertState, str]:
    firing = [b for b in burns if b.firing]
    for b in firing:
        if b.severity is Severity.CRITICAL:
            return AlertState.CRITICAL, (
                f"burning {b.long_burn:.1f}x over {b.long_window} and {b.short_burn:.1f}x "
                f"over {b.short_window} (threshold {b.factor:g}x)")
    if firing:
        b = firing[0]
        return AlertState.WARNING, (
            f"burning {b.long_burn:.1f}x over {b.long_window} and {b.short_burn:.1f}x over "
            f"{b.short_window} (threshold {b.factor:g}x)")
    cooling = [b for b in burns if b.long_burn > b.factor]
    if cooling:
        b = cooling[0]
        return AlertState.WARNING, (
            f"burned {b.long_burn:.1f}x over {b.long_window} (threshold {b.factor:g}x); "
            f"recovered over {b.short_window}")
    if total and remaining <= 0:
        return AlertState.WARNING, "error budget exhausted"
    if not total:
        return AlertState.OK, "no traffic in the window"
    return AlertState.OK, "within budget"


def evaluate(resource: Resource, metrics: MetricsStore, *, now: float,
             observable_seconds: float, domain: str = "cluster.local") -> SloStatus:
    """The status of one ServiceLevelObjective resource at ``now``."""
    spec: ServiceLevelObjectiveSpec = resource.spec
    fqdn = service_fqdn(spec.service, resource.metadata.namespace, domain)
    threshold = spec.sli.latency.threshold_ms if spec.sli.latency is not None else None
    budget = 1.0 - spec.target / 100.0
    observed = min(spec.window_seconds, observable_seconds)
    # the whole window, not only the observed part: a proxy's first report holds the
    # counts it made before it (the store places them, docs/adr/0044)
    good, total = metrics.good_total(fqdn, spec.window_seconds,
                                     latency_threshold_ms=threshold, now=now)
    burns = tuple(
        BurnRateStatus(
            b.long_window, b.short_window, b.factor, b.severity,
            _burn(metrics, fqdn, window_seconds(b.long_window), threshold, budget, now),
            _burn(metrics, fqdn, window_seconds(b.short_window), threshold, budget, now))
        for b in spec.burn_rates)
    allowed = budget * total
    remaining = 1.0 - max(total - good, 0.0) / allowed if allowed else 1.0
    state, reason = _state(burns, remaining, total)
    return SloStatus(
        name=resource.metadata.name, namespace=resource.metadata.namespace, service=fqdn,
        sli=spec.sli.kind, threshold_ms=threshold, target=spec.target, window=spec.window,
        window_seconds=spec.window_seconds, observed_seconds=observed, good=good,
        total=total, burn_rates=burns, state=state, reason=reason)


class SloEvaluator:
    """Evaluates every stored ServiceLevelObjective against a metrics store on demand."""

    def __init__(self, metrics: MetricsStore, *, started: float | None = None,
                 retention_seconds: float | None = None, domain: str = "cluster.local"):
        self._metrics = metrics
        self._started = time.time() if started is None else started
        self._retention = retention_seconds or float(
            getattr(metrics, "retention_seconds", DEFAULT_RETENTION))
        self._domain = domain

    def observable_seconds(self, now: float) -> float:
        """How far back the store has data: since its oldest sample when it can tell
        (``oldest_sample_at()``, optional), else since the control plane started; at most
        its retention."""
        oldest = getattr(self._metrics, "oldest_sample_at", None)
        first = oldest() if callable(oldest) else None
        since = self._started if first is None else first
        return max(min(now - since, self._retention), 1.0)

    def evaluate(self, slos: Sequence[Resource], *, now: float | None = None
                 ) -> list[SloStatus]:
        now = time.time() if now is None else now
        observable = self.observable_seconds(now)
        return [evaluate(r, self._metrics, now=now, observable_seconds=observable,
                         domain=self._domain) for r in slos]
