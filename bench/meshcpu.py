"""Control plane + agents CPU per request at a fixed rate, with longer windows than the
data-plane bench (whose CPU columns are per 10 s run): one control plane, the bench
service's two sidecars, an idle window, then a loaded one; the difference per request.

    .venv/bin/python -m bench.meshcpu --rate 1000 --seconds 30 [-- --trace-sampling 1]

Process CPU is read from /proc (10 ms ticks), hence the 30 s windows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import tools
from bench.dataplane import HOST, _agent_json, _mesh
from bench.machine import proc_stat
from shoal.testing.local import ControlPlaneProcess, free_port


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.meshcpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("cp_args", nargs="*", help="extra `shoal control-plane` arguments")
    a = p.parse_args(argv)
    tools.ensure_tools()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-cpu-") as tmp:
        work = Path(tmp)
        cp = ControlPlaneProcess(work / "shoal", extra=a.cp_args).start()
        server, client = _mesh(cp, work / "nginx", free_port())
        try:
            server.start()
            client.start()
            cp.wait_synced({server.name, client.name}, timeout=90)
            outbound = int(_agent_json(cp, client)["outboundPort"])
            pids = {"control plane": cp.pid, "client agent": client.pid,
                    "server agent": server.pid}

            def cpu() -> dict[str, float]:
                return {k: proc_stat(pid).cpu_s for k, pid in pids.items()}

            time.sleep(3)
            before = cpu()
            time.sleep(a.seconds)
            idle = {k: (v - before[k]) / a.seconds for k, v in cpu().items()}
            before, t0 = cpu(), time.monotonic()
            tools.fixed_rate(f"http://127.0.0.1:{outbound}/", HOST, rate=a.rate,
                             connections=4, seconds=a.seconds, warmup=0,
                             log_file=work / "h2load.log")
            time.sleep(2)  # the last reports
            elapsed = time.monotonic() - t0
            busy = {k: (v - before[k]) / elapsed for k, v in cpu().items()}
        finally:
            client.stop()
            server.stop()
            cp.stop()
    for k in pids:
        print(f"{k:>14}: idle {idle[k] * 1000:5.1f} ms/s, at {a.rate} req/s "
              f"{busy[k] * 1000:5.1f} ms/s")
    extra = sum(busy.values()) - sum(idle.values())
    print(f"control plane + agents: {extra * 1000:.1f} ms/s more under load = "
          f"{extra / a.rate * 1e6:.1f} µs per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
