"""A real Prometheus (Debian's ``prometheus``) for tests: started on a free port with a
given config, ready-checked, queried, stopped. One home for what the telemetry tests need
of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from shoal.envoy import free_port
from shoal.testing.local import wait_for

BINARY = shutil.which("prometheus")


class PrometheusProcess:
    """``prometheus --config.file=CONFIG`` with its data in ``workdir``."""

    def __init__(self, config: Path, workdir: Path, binary: str | None = None) -> None:
        self.config = config
        self.workdir = workdir
        self.binary = binary or BINARY
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> PrometheusProcess:
        """On a free port; another pick if someone took that port meanwhile."""
        if self.binary is None:
            raise RuntimeError("prometheus is not installed (scripts/system-deps.sh prometheus)")
        for attempt in range(5):
            port = free_port()
            log_path = self.workdir / f"prometheus-{attempt}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [self.binary, f"--config.file={self.config}",
                     f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{port}"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            url = f"http://127.0.0.1:{port}"

            def ready(url: str = url, proc: subprocess.Popen[bytes] = proc) -> bool:
                if proc.poll() is not None:
                    return True  # exited: stop waiting
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200

            wait_for(ready, timeout, "prometheus to be ready")
            if proc.poll() is None:
                self._proc, self.url = proc, url
                return self
            if "address already in use" not in log_path.read_text(errors="replace"):
                raise AssertionError(f"prometheus exited:\n{log_path.read_text()[-3000:]}")
        raise AssertionError("no free port for prometheus")

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql},
                           timeout=10).json()
        return list(answer["data"]["result"])

    def value(self, promql: str) -> float | None:
        """The first result's value, None without one."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
                    ["data"]["alerts"])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
