"""The app of a pod in its sandbox (docs/adr/0024-pod-app-sandbox.md), end to end.

The app is a probe: it tries the escapes of issue 11 (flush the capture, enter other
namespaces, see or signal the agent and Envoy, read the control plane's and its agent's
keys, use the operator API) and serves what happened; the legitimate paths (served
through its sidecar, outbound calls captured) must still work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.app import without_secrets
from shoal.errors import AgentError
from shoal.hosts import capture, netns
from shoal.hosts.sandbox import AppUser, Sandbox, parse_app_user
from shoal.testing.local import AgentProcess, ControlPlaneProcess, wait_for

from .conftest import app_python, needs_root
from .test_capture_live import Mesh, get

PROBE = r'''
import errno, json, os, shutil, socket, ssl, subprocess, sys, urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
UNVERIFIED = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),
    urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))

def run(*argv):
    exe = shutil.which(argv[0], path=PATH) or argv[0]
    try:
        done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=10)
    except OSError as e:
        return {"rc": None, "err": str(e)}
    return {"rc": done.returncode, "err": done.stderr.strip()[-200:]}

def err(e):
    return errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)

def read(path):
    try:
        with open(path, "rb") as f:
            return {"bytes": len(f.read())}
    except OSError as e:
        return {"error": err(e)}

def listdir(path):
    try:
        return {"entries": sorted(os.listdir(path))}
    except OSError as e:
        return {"error": err(e)}

def status(path):
    out = {}
    for line in open(path):
        key, _, value = line.partition(":")
        if key.startswith("Cap") or key in ("NoNewPrivs", "Uid", "Gid", "Groups"):
            out[key] = value.strip()
    return out

def kill0(pid):
    try:
        os.kill(pid, 0)
        return "alive"
    except OSError as e:
        return err(e)

def connect_unix(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return "connected"
    except OSError as e:
        return err(e)
    finally:
        s.close()

def http(method, url):
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with UNVERIFIED.open(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return str(getattr(e, "reason", e))

def procs():
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out[pid] = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError as e:
                out[pid] = err(e)
    return out

def probe(cfg):
    return {
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
        "groups": os.getgroups(), "status": status("/proc/self/status"),
        "cwd": os.getcwd(), "env": sorted(os.environ),
        "iptables_flush": run("iptables", "-w", "2", "-t", "nat", "-F"),
        "iptables_flush_chain": run("iptables", "-w", "2", "-t", "nat", "-F", "SHOAL_OUTPUT"),
        "ip_link_down": run("ip", "link", "set", "lo", "down"),
        "nsenter_pid1": run("nsenter", "-t", "1", "-n", "-m", "true"),
        "nsenter_netns": [run("nsenter", f"--net={p}", "true") for p in cfg["netns"]],
        "nsenter_host": [run("nsenter", "-t", str(p), "-n", "-m", "true") for p in cfg["pids"]],
        "kill0": {str(p): kill0(p) for p in cfg["pids"]},
        "proc_root": {str(p): listdir(f"/proc/{p}/root") for p in cfg["pids"]},
        "procs": procs(),
        "files": {k: read(v) for k, v in cfg["files"].items()},
        "dirs": {k: listdir(v) for k, v in cfg["dirs"].items()},
        "sds": {p: connect_unix(p) for p in cfg["sockets"]},
        "api": {f"{m} {u}": http(m, u) for m, u in cfg["api"]},
    }

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/probe":
            out = probe(json.loads(q["cfg"]))
        elif url.path == "/call":
            with NO_PROXY.open(q["url"], timeout=20) as r:
                out = {"status": r.status, "body": json.loads(r.read())}
        else:
            out = {"ok": True}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''


# --- pure parts ----------------------------------------------------------------------------

def test_app_user_defaults_to_nobody_and_never_root_or_the_proxy() -> None:
    user = parse_app_user(None)
    assert user.uid not in (0, 1337) and user.gid != 0
    assert parse_app_user("4242") == AppUser(4242, 4242)
    assert parse_app_user("4242:4343") == AppUser(4242, 4343)
    for bad in ("root", "0", "0:0", "4242:0", "1337", "4242:1337", "nosuchuser-x", ":1",
                "1:", "4242:nosuchgroup-x"):
        with pytest.raises(AgentError, match="--app-user"):
            parse_app_user(bad)
    with pytest.raises(AgentError, match="sidecar"):
        parse_app_user("4000", proxy_uid=4000)


def test_the_app_never_gets_the_agents_credentials() -> None:
    env = {"PATH": "/bin", "SHOAL_TOKEN": "t", "SHOAL_TOKEN_FILE": "/f", "SHOAL_API_TOKEN":
           "a", "SHOAL_API_TOKEN_FILE": "/g", "SHOAL_SERVICE": "web",
           "SHOAL_UPSTREAM_TOKENS_8080": "127.0.0.1:1", "SHOAL_CONTROL_PLANE": "http://x"}
    assert without_secrets(env) == {"PATH": "/bin", "SHOAL_SERVICE": "web",
                                    "SHOAL_UPSTREAM_TOKENS_8080": "127.0.0.1:1",
                                    "SHOAL_CONTROL_PLANE": "http://x"}


def test_sandbox_command_line() -> None:
    if any(shutil.which(t) is None for t in ("unshare", "setpriv", "mount", "sh")):
        pytest.skip("util-linux missing")
    box = Sandbox(AppUser(4242, 4343, groups=(5000,)),
                  hide=(Path("/b"), Path("/a/b/c"), Path("/a"), Path("/b")), port=80)
    argv = box.command(["app", "--x"], cwd="/srv")
    assert argv[1:8] == ["--pid", "--fork", "--kill-child", "--mount-proc", "--propagation",
                         "slave", "--"]
    i = argv.index("shoal-sandbox")
    assert argv[i + 1:i + 5] == ["80", "/a", "/b", "--"]  # once, /a/b/c hidden with /a
    setpriv = argv[i + 5:argv.index("shoal-app") - 4]
    assert setpriv[1:] == ["--reuid=4242", "--regid=4343", "--groups=5000", "--inh-caps=-all",
                           "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    assert argv[-4:] == ["shoal-app", "/srv", "app", "--x"]
    assert box.environment({"HOME": "/root", "X": "1"}) == {
        "HOME": "/", "USER": "4242", "LOGNAME": "4242", "X": "1"}


# --- live --------------------------------------------------------------------------------

@pytest.fixture
def mesh(prefix: str) -> Iterator[Mesh]:
    """Like test_capture_live's, but the control plane's directory is one any user may
    traverse (as /var/lib/shoal would be): only its own modes protect its keys."""
    workdir = Path(tempfile.mkdtemp(prefix="shoal-sandbox-"))
    workdir.chmod(0o755)
    network = netns.create_network(prefix + "net", f"10.198.{os.getpid() % 250 + 1}.0/24")
    try:
        with ControlPlaneProcess(workdir, lease_ttl=6.0,
                                 agent_host=str(network.gateway)) as cp:
            yield Mesh(cp, network, prefix)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def failed(result: dict[str, Any]) -> bool:
    return result["rc"] != 0


@pytest.mark.envoy
@pytest.mark.slow
@needs_root
def test_the_app_cannot_escape_its_pod_but_still_serves_and_calls(mesh: Mesh) -> None:
    cp = mesh.cp
    data = cp.workdir / "data"
    token_file = cp.token_file("default", "probe")
    web = mesh.agent("web", "web")
    probe = AgentProcess(
        cp, service="probe", port=8080, name="probe-1", app_port=8080,
        command=[app_python(), "-c", PROBE], token_file=token_file,
        env={"SHOAL_API_TOKEN": "leak-me", "SHOAL_TOKEN_FILE": str(token_file)},
        extra=["--pod", mesh.pod("probe"), "--network", mesh.network.name,
               "--app-hide", str(data / "shoal.db")])
    with web, probe:
        cp.wait_synced({"web-1", "probe-1"}, timeout=120)
        info = mesh.info(probe)
        probe_ns = netns.netns_name(mesh.pod("probe"))
        pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", probe_ns],
                                               capture_output=True, text=True).stdout.split()]
        assert info["agentPid"] in pids
        envoy_dir = Path(info["envoyDir"])
        api = f"http://{mesh.network.gateway}:{cp.api_port}"
        cfg = {
            "pids": pids,
            "netns": [f"/run/netns/{netns.netns_name(mesh.pod('web'))}", "/proc/1/ns/net"],
            "files": {
                "ca_key": str(next((data / "ca").glob("*key*.pem"), data / "ca" / "x-key.pem")),
                "root_key": str(data / "ca" / "root-1-key.pem"),
                "token_key": str(data / "ca" / "token-key.pem"),
                "admin_token": str(data / "admin.token"),
                "store": str(data / "shoal.db"),
                "token_file": str(token_file),
                "agent_json": str(probe.run_dir / "agent.json"),
                "bootstrap": str(envoy_dir / "envoy-bootstrap.json"),
                "web_bootstrap": str(Path(mesh.info(web)["envoyDir"]) /
                                     "envoy-bootstrap.json"),
                "agent_environ": f"/proc/{info['agentPid']}/environ",
            },
            "dirs": {"run_dir": str(probe.run_dir), "envoy_dir": str(envoy_dir),
                     "proxies": str(envoy_dir.parent), "ca": str(data / "ca")},
            "sockets": [info["sdsSocket"]],
            "api": [["POST", f"{cp.agent_url}/api/v1/tokens"],
                    ["GET", f"{cp.agent_url}/api/v1/proxies"],
                    ["POST", f"{api}/api/v1/tokens"], ["POST", f"{cp.url}/api/v1/tokens"]],
        }
        url = "http://probe:8080/probe?cfg=" + urllib.parse.quote(json.dumps(cfg))
        # the legitimate path in: a peer pod, by name, through both sidecars
        reply = wait_for(lambda: get(mesh.pod("web"), url), 60, "the probe through the mesh")
        assert reply["status"] == 200
        r = reply["body"]

        # who it is: not root, not the proxy, no capabilities, no_new_privs
        assert r["uid"] == r["euid"] == 65534 and r["gid"] == 65534, r["status"]
        assert 0 not in r["groups"] and 1337 not in r["groups"]
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(r["status"][cap], 16) == 0, (cap, r["status"])
        assert r["status"]["NoNewPrivs"] == "1"
        assert r["cwd"] == os.getcwd()  # the agent's, readable by the app user
        # no credential of the agent in its environment
        assert not [k for k in r["env"] if "TOKEN" in k], r["env"]
        assert {"PORT", "SHOAL_SERVICE", "SHOAL_WORKLOAD"} <= set(r["env"])

        # the capture: cannot be changed, and is intact
        assert failed(r["iptables_flush"]) and failed(r["iptables_flush_chain"])
        assert failed(r["ip_link_down"])
        rules = capture.installed(probe_ns)
        assert "-A SHOAL_OUTPUT -p tcp -j REDIRECT --to-ports 15001" in rules
        assert "--dport 8080 -j REDIRECT --to-ports 15006" in rules
        # no IPv6 on eth0: nothing reaches around the (IPv4) capture by link-local address
        assert not subprocess.run(["ip", "-n", probe_ns, "-6", "addr", "show", "dev", "eth0"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        # other namespaces: not enterable
        assert failed(r["nsenter_pid1"]), r["nsenter_pid1"]
        assert all(map(failed, r["nsenter_netns"])), r["nsenter_netns"]
        assert all(map(failed, r["nsenter_host"])), r["nsenter_host"]
        # the agent, Envoy and everything else of the pod: invisible, unsignalable
        assert set(r["kill0"].values()) == {"ESRCH"}, r["kill0"]
        assert all("error" in v for v in r["proc_root"].values()), r["proc_root"]
        visible = r["procs"]
        assert len(visible) <= 4 and all(int(p) < 100 for p in visible), visible
        assert not [c for c in visible.values() if "envoy" in c or "shoal run" in c], visible

        # keys and the store: the control plane's (its data directory is 0700), the
        # token (hidden: /dev/null), the agent's and every Envoy's directories (hidden)
        files = r["files"]
        for name in ("ca_key", "root_key", "token_key", "admin_token", "store", "agent_json",
                     "bootstrap", "web_bootstrap", "agent_environ"):
            assert "error" in files[name], (name, files[name])
        assert files["token_file"] == {"bytes": 0}
        assert r["dirs"]["run_dir"] == r["dirs"]["proxies"] == {"entries": []}
        assert r["dirs"]["envoy_dir"] == {"error": "ENOENT"}  # under the hidden proxies dir
        assert r["dirs"]["ca"] == {"error": "EACCES"}
        assert r["sds"][info["sdsSocket"]] != "connected"
        # the operator API: only the agent listener is reachable, and it refuses
        for call, got in r["api"].items():
            assert got in (401, 403) or isinstance(got, str), (call, got)
        assert r["api"][f"POST {cp.agent_url}/api/v1/tokens"] in (401, 403)

        # the legitimate path out: its call to another service is captured (mTLS by
        # its sidecar, with its identity)
        call = "http://probe:8080/call?url=" + urllib.parse.quote("http://web:8080/hello")
        out = get(mesh.pod("web"), call)["body"]
        assert out["status"] == 200 and out["body"]["served_by"] == "web-1"
        xfcc = {k.lower(): v for k, v in out["body"]["headers"].items()}
        assert "spiffe://cluster.local/ns/default/sa/probe" in \
            xfcc.get("x-forwarded-client-cert", ""), xfcc
        # and the host's own view of the token file is untouched
        assert token_file.read_text().strip()
