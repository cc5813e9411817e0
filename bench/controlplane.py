"""Control-plane benchmark: N fake sidecars (ADS clients) converge on config changes.

A real control plane (sqlite store) holds a synthetic mesh (``bench.mesh``); or
several instances sharing one etcd (``instances``, the HA layout of docs/operations.md),
each serving the clients of every ``instances``-th worker. N FakeAdsClients run in
worker processes (not in the control plane's), each with its own gRPC connection and
node ``bench-<i>.default`` fronting one of the mesh's Workloads. Each
round applies a VirtualService weight change for one service and measures, per client,
the time from just before the apply HTTP call until that client has received (and
ACKed) the route configuration with the new split. Then as many endpoint rounds: a
Workload of one service registers (or leaves) and each client is timed until that
service's endpoints in its EDS have (or no longer have) the workload's address.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from bench import mesh
from bench.ads_worker import worker
from bench.machine import ProcStat, proc_stat, procs_stat
from bench.profile import Profiler, py_spy, summarize
from bench.stats import percentile
from shoal.store.etcd import MAX_TXN_OPS
from shoal.testing.etcd import EtcdServer
from shoal.testing.local import ControlPlaneProcess

# Seconds before a steady RSS is read: the control plane gives freed native memory back
# to the OS once it has been quiet for 5 s (shoal.control.collector)
SETTLE_S = 8.0


@dataclass(frozen=True)
class Options:
    clients: int = 1000
    services: int = 50
    rounds: int = 10
    workers: int = 2
    delta: bool = True  # the agents' default (ADR 0037)
    instances: int = 1  # control-plane processes; more than one share an etcd store
    store: str = "sqlite"  # "etcd" with one instance: etcd's own cost, for comparison
    pause: float = 1.0  # quiet seconds between rounds
    # py-spy raw output of the control plane during the rounds (and during the initial
    # sync: the same name with ".sync" before its suffix)
    profile: Path | None = None

    @property
    def store_used(self) -> str:
        """The store the run uses: several instances always share etcd."""
        return "etcd" if self.instances > 1 else self.store


@dataclass
class Result:
    options: Options
    apply_mesh_s: float
    initial_sync_s: float  # all N clients connected and synced, from the first start
    change_latencies: list[float] = field(default_factory=list)  # seconds, all rounds
    per_round: list[tuple[float, ...]] = field(default_factory=list)  # min p50 p99 max
    endpoint_latencies: list[float] = field(default_factory=list)  # workload joins/leaves
    endpoint_rounds: list[tuple[float, ...]] = field(default_factory=list)
    rss_synced_mb: float = 0.0  # steady: after the initial sync
    rss_after_mb: float = 0.0  # steady: after the change rounds
    rss_peak_rounds_mb: float = 0.0  # highest VmRSS sampled during the rounds
    hwm_mb: float = 0.0  # VmHWM at the end (peak over the whole run; summed over instances)
    hwm_per_instance_mb: list[float] = field(default_factory=list)
    cpu_rounds_s: float = 0.0  # utime+stime during the change rounds
    cpu_clients_rounds_s: float = 0.0  # the client processes' during the VS change rounds
    cpu_sync_s: float = 0.0  # utime+stime during the initial sync
    cpu_clients_sync_s: float = 0.0  # the client processes' (from their start to synced)
    # py-spy: (samples, top inclusive, top self) during the rounds, if profiled
    profile: tuple[int, list[tuple[str, int]], list[tuple[str, int]]] | None = None

    def pct(self, q: float) -> float:
        return percentile(self.change_latencies, q)

    def endpoint_pct(self, q: float) -> float:
        return percentile(self.endpoint_latencies, q) if self.endpoint_latencies else 0.0


class _Sampler(threading.Thread):
    """Samples the VmRSS of ``pids`` (summed) every ``interval`` seconds; ``peak`` is the
    highest."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval, self.peak = pids, interval, 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, procs_stat(self.pids).rss_mb)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


def _recv(conn: Connection, kind: str, timeout: float = 300.0) -> object:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {kind!r} from an ADS worker in {timeout}s")
    msg = conn.recv()
    if msg[0] == "error":
        raise RuntimeError(f"ADS worker failed: {msg[1]}")
    if msg[0] != kind:
        raise RuntimeError(f"ADS worker sent {msg[0]!r}, expected {kind!r}")
    return msg[1] if len(msg) > 1 else None


def run(opts: Options, log: Callable[[str], None] = print) -> Result:
    if opts.profile and py_spy() is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy, or set $PY_SPY)")
    store = opts.store_used
    with tempfile.TemporaryDirectory(prefix="shoal-bench-cp-") as tmp, \
            contextlib.ExitStack() as stack:
        cps = []
        if store == "etcd":
            etcd = EtcdServer(Path(tmp) / "etcd")
            etcd.start()
            stack.callback(etcd.stop)
        for k in range(opts.instances):
            cps.append(ControlPlaneProcess(
                Path(tmp) / f"cp-{k}", store=store,
                extra=["--etcd-endpoints", etcd.url] if store == "etcd" else []))
            stack.callback(cps[-1].stop)
            cps[-1].start()
        cp, pids = cps[0], [c.pid for c in cps]
        procs: list[mp.process.BaseProcess] = []
        conns: list[Connection] = []
        try:
            t = time.monotonic()
            with cp.client() as c:
                mesh.apply_mesh(c, opts.services,
                                part=MAX_TXN_OPS if store == "etcd" else 1000)
            apply_s = time.monotonic() - t
            log(f"mesh applied: {opts.services} services x 2 workloads, DR+VS each "
                f"({apply_s:.2f} s)")
            ctx = mp.get_context("spawn")
            nodes = [(f"bench-{i}.default",
                      mesh.workload_name(i % opts.services, (i // opts.services) % 2))
                     for i in range(opts.clients)]
            sync_profile = opts.profile.with_suffix(".sync" + opts.profile.suffix) \
                if opts.profile else None
            profiler = Profiler(cp.pid, sync_profile) if sync_profile else None
            if profiler:
                time.sleep(1.0)  # py-spy attaches
            before_sync = procs_stat(pids)
            t0 = time.monotonic()
            for w in range(opts.workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=worker, daemon=True,
                                args=(child, cps[w % len(cps)].xds, nodes[w::opts.workers],
                                      mesh.vhost_name(0), opts.delta))
                p.start()
                procs.append(p)
                conns.append(parent)
            synced_at = [t for conn in conns for t in _recv(conn, "synced")]  # type: ignore[union-attr]
            clients_cpu = procs_stat([p.pid for p in procs if p.pid is not None]).cpu_s
            result = Result(opts, apply_s, max(synced_at) - t0)
            if profiler:
                profiler.stop()
                log(f"py-spy profile of the initial sync: {sync_profile}")
            time.sleep(SETTLE_S)
            after_sync = procs_stat(pids)
            result.cpu_sync_s = after_sync.cpu_s - before_sync.cpu_s
            result.cpu_clients_sync_s = clients_cpu
            result.rss_synced_mb = after_sync.rss_mb
            log(f"{opts.clients} clients synced in {result.initial_sync_s:.2f} s "
                f"(worker start-up included); control plane RSS {after_sync.rss_mb:.0f} MB")
            _rounds(cp, pids, conns, opts, result, log,
                    [p.pid for p in procs if p.pid is not None])
            time.sleep(SETTLE_S)
            end: ProcStat = procs_stat(pids)
            result.rss_after_mb, result.hwm_mb = end.rss_mb, end.hwm_mb
            result.hwm_per_instance_mb = [proc_stat(pid).hwm_mb for pid in pids]
            return result
        except Exception:
            lines = cp.log.read_text(errors="replace").splitlines() if cp.log.exists() else []
            bad = [ln for ln in lines if '"level": "info"' not in ln][:15]
            log("control plane log, first lines that are not info:\n" + "\n".join(bad)
                + "\nlast lines:\n" + "\n".join(lines[-5:]))
            raise
        finally:
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.send(("stop",))
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.terminate()


def _rounds(cp: ControlPlaneProcess, pids: list[int], conns: list[Connection], opts: Options,
            result: Result, log: Callable[[str], None], clients: list[int]) -> None:
    """Changes are applied through ``cp``; ``pids`` are every instance's."""
    sampler = _Sampler(pids)
    sampler.start()
    profiler = Profiler(cp.pid, opts.profile) if opts.profile else None
    if profiler:
        time.sleep(1.0)  # py-spy attaches
    before, clients_before = procs_stat(pids), procs_stat(clients)
    with cp.client() as c:
        for k in range(opts.rounds):
            v1 = 20 if k % 2 == 0 else 80  # the mesh starts at 80/20
            stats = _timed(conns, ("watch", mesh.vhost_name(0), (v1, 100 - v1)),
                           lambda v1=v1: c.apply(mesh.virtual_service(0, v1), source="bench"),
                           result.change_latencies)
            result.per_round.append(stats)
            log(f"round {k + 1}: {v1}/{100 - v1} split -> {_ms(stats)}")
            time.sleep(opts.pause)
        result.cpu_rounds_s = procs_stat(pids).cpu_s - before.cpu_s
        result.cpu_clients_rounds_s = procs_stat(clients).cpu_s - clients_before.cpu_s
        cluster = mesh.cluster_name(0)
        for k in range(opts.rounds):
            joins = k % 2 == 0
            change = ((lambda: c.apply(mesh.extra_workload(0), source="bench")) if joins else
                      (lambda: c.delete("Workload", mesh.NAMESPACE, mesh.EXTRA_WORKLOAD)))
            stats = _timed(conns, ("watch_eds", cluster, mesh.EXTRA_ADDRESS, joins), change,
                           result.endpoint_latencies)
            result.endpoint_rounds.append(stats)
            log(f"endpoint round {k + 1}: a workload {'joins' if joins else 'leaves'} -> "
                f"{_ms(stats)}")
            time.sleep(opts.pause)
    result.rss_peak_rounds_mb = sampler.stop()
    if profiler and opts.profile:
        profiler.stop()
        result.profile = summarize(opts.profile)
        log(f"py-spy profile of the rounds: {opts.profile}")


def _timed(conns: list[Connection], watch: tuple[object, ...], change: Callable[[], object],
           into: list[float]) -> tuple[float, ...]:
    """Make every worker watch for ``watch``, then ``change`` and collect each client's
    time to see it (appended to ``into``): (min, p50, p99, max) in seconds."""
    for conn in conns:
        conn.send(watch)
    for conn in conns:
        _recv(conn, "watching")
    t0 = time.monotonic()
    change()
    done = [t - t0 for conn in conns for t in _recv(conn, "done")]  # type: ignore[union-attr]
    into += done
    return (min(done), percentile(done, 50), percentile(done, 99), max(done))


def _ms(stats: tuple[float, ...]) -> str:
    return (f"first {stats[0] * 1000:.0f} ms, p50 {stats[1] * 1000:.0f} ms, "
            f"p99 {stats[2] * 1000:.0f} ms, max {stats[3] * 1000:.0f} ms")
