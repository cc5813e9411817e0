"""External tools the data-plane benchmark drives: nginx, h2load (fixed rate), wrk.

They come from Debian (``nginx-light``, ``nghttp2-client``, ``wrk``). As root,
:func:`ensure_tools` installs the missing ones with apt-get; otherwise it says which
command to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.stats import percentile

PACKAGES = {"nginx": "nginx-light", "h2load": "nghttp2-client", "wrk": "wrk"}
BODY = b"shoal bench: a small static body of about one hundred bytes, served by nginx.\n" * 1


class MissingTools(RuntimeError):
    pass


def ensure_tools(install: bool = True) -> None:
    missing = [tool for tool in PACKAGES if shutil.which(tool) is None]
    if not missing:
        return
    pkgs = sorted({PACKAGES[t] for t in missing})
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(pkgs)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        if not any(shutil.which(t) is None for t in missing):
            return
    raise MissingTools(f"missing {', '.join(missing)}: run `sudo {' '.join(cmd)}`")


def nginx_command(workdir: Path, port: int) -> list[str]:
    """Write a one-process nginx config serving :data:`BODY` on 127.0.0.1:port."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "www").mkdir(exist_ok=True)
    (workdir / "www" / "index.html").write_bytes(BODY)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/tmp;
    proxy_temp_path {workdir}/tmp;
    fastcgi_temp_path {workdir}/tmp;
    uwsgi_temp_path {workdir}/tmp;
    scgi_temp_path {workdir}/tmp;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        root {workdir}/www;
        default_type text/plain;
    }}
}}
""")
    (workdir / "tmp").mkdir(exist_ok=True)
    return [shutil.which("nginx") or "nginx", "-p", str(workdir), "-c", str(conf)]


@dataclass(frozen=True)
class Latency:
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    rate: float  # achieved requests/s


def fixed_rate(url: str, host: str | None, *, rate: int, connections: int, seconds: int,
               warmup: int, log_file: Path) -> Latency:
    """``h2load --h1 --rps``: ``rate`` req/s spread over ``connections`` connections.

    Percentiles come from h2load's per-request log (``--log-file``), warm-up excluded.
    """
    per_conn = max(1, rate // connections)
    cmd = ["h2load", "--h1", "-c", str(connections), "-t", "1", "-m", "1",
           "--rps", str(per_conn), "-D", str(seconds), "--warm-up-time", str(warmup),
           "--log-file", str(log_file), url]
    if host:
        cmd[1:1] = ["-H", f":authority: {host}"]  # h2load: "host:" would be a 2nd header
    log_file.unlink(missing_ok=True)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 60,
                         check=False)
    if res.returncode != 0:
        raise RuntimeError(f"h2load failed: {res.stderr.strip() or res.stdout.strip()}")
    durations: list[float] = []
    errors = 0
    for line in log_file.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        status, micros = int(parts[1]), int(parts[2])
        if status != 200:
            errors += 1
        durations.append(micros / 1000)
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", res.stdout)
    return Latency(
        requests=len(durations), errors=errors,
        p50_ms=percentile(durations, 50), p90_ms=percentile(durations, 90),
        p99_ms=percentile(durations, 99),
        rate=float(m.group(1)) if m else len(durations) / seconds,
    )


@dataclass(frozen=True)
class Throughput:
    rps: float
    errors: int


def max_throughput(url: str, host: str | None, *, connections: int, seconds: int) -> Throughput:
    """``wrk -t1 -c<connections> -d<seconds>s``: requests/s at saturation."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if host:
        cmd[1:1] = ["-H", f"Host: {host}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    m = re.search(r"Requests/sec:\s+([\d.]+)", res.stdout)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed: {res.stderr.strip() or res.stdout.strip()}")
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", res.stdout)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     res.stdout)
    errors = int(errs.group(1)) if errs else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return Throughput(float(m.group(1)), errors)
