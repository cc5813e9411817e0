"""Locality failover against the real thing: a client in r1/z1 prefers web in r1/z1, fails
over to r1/z2 when that instance answers 503 (outlier detection ejects it) and comes back
once the ejection ends. Nothing asserts on elapsed time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for
from tests.e2e.conftest import agent_info, app_command

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

URL = "http://web:8080/"
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    loadBalancer:
      localityLbSetting: {enabled: true}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5s,
                       maxEjectionPercent: 100}
"""
# maxEjectionPercent: Envoy's default (10 %) never ejects one host of two (the ejection
# "overflows"), so without it nothing would fail over.
# A failing client request means web-z1 answered 503 (to all its default retries) and
# its first 503 ejects it (consecutive5xxErrors: 1). Sequential requests can only fail
# while that ejection travels from Envoy's main thread to the worker; usually none does
# (a retry already lands in z2). The bound leaves room for a loaded machine.
MAX_FAILED_DURING_SWITCH = 10


def served(http: httpx.Client, n: int) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        r = http.get(URL)
        out[r.json()["served_by"] if r.status_code == 200 else str(r.status_code)] += 1
    return out


def test_failover_to_the_next_zone_and_back(tmp_path: Path) -> None:
    flag = tmp_path / "web-z1.fail"
    with ControlPlaneProcess(tmp_path, lease_ttl=6.0) as cp:
        def agent(name: str, service: str, where: str, **kw: object) -> AgentProcess:
            return AgentProcess(cp, service=service, port=8080, name=name,
                                command=app_command("http"),
                                extra=["--locality", where], **kw)  # type: ignore[arg-type]
        agents = [
            agent("web-z1", "web", "r1/z1", labels={"version": "v1"},
                  env={"FAIL_IF_EXISTS": str(flag)}),
            agent("web-z2", "web", "r1/z2", labels={"version": "v1"}),
            agent("client", "client", "r1/z1"),
        ]
        try:
            for a in agents:
                a.start()
            cp.wait_synced({a.name for a in agents})
            info = agent_info(agents[-1])
            http = httpx.Client(proxy=f"http://127.0.0.1:{info['outboundPort']}", timeout=15)
            wait_for(lambda: set(served(http, 10)) == {"web-z1", "web-z2"}, 30,
                     "round robin over both zones before the DestinationRule")
            with cp.client() as c:
                c.apply(DR)
            wait_for(lambda: served(http, 10) == {"web-z1": 10}, 30, "z1 to be preferred")
            assert served(http, 50) == {"web-z1": 50}

            flag.touch()  # web-z1 now answers 503
            seen: Counter[str] = Counter()

            def switched() -> bool:
                got = served(http, 1)
                seen.update(got)
                return got == {"web-z2": 1}
            try:
                wait_for(switched, 30, "failover to z2", interval=0)
            except TimeoutError:
                admin = f"http://127.0.0.1:{info['adminPort']}"
                print(seen, httpx.get(admin + "/clusters").text[-6000:],
                      httpx.get(admin + "/stats?filter=outlier").text)
                raise
            failed = sum(v for k, v in seen.items() if k not in ("web-z1", "web-z2"))
            print(f"requests until failover: {dict(seen)}")
            assert failed <= MAX_FAILED_DURING_SWITCH, seen
            assert served(http, 30) == {"web-z2": 30}  # ejected: z1 gets nothing

            flag.unlink()  # recovered: back to z1 once the 5 s ejection is over
            wait_for(lambda: served(http, 1) == {"web-z1": 1}, 60, "traffic back in z1")
            assert served(http, 30) == {"web-z1": 30}
        finally:
            for a in agents:
                a.stop()
