"""`shoal apply / get / delete` with kubectl's habits, against a real control plane:
`apply -n NS -f FILE|DIR|-`, `get KIND -A` and `-l`, `delete -f FILE
[--ignore-not-found]` that tries every resource."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.testing.local import ControlPlaneProcess

SERVICE = """apiVersion: mesh.shoal.io/v1alpha1
kind: Service
metadata: {{name: {name}{extra}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080}}]
"""


def service(name: str, extra: str = "") -> str:
    return SERVICE.format(name=name, extra=extra)


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    with ControlPlaneProcess(tmp_path_factory.mktemp("cli")) as cp:
        yield cp


def shoal(cp: ControlPlaneProcess, *args: str, stdin: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOAL_CONTROL_PLANE": cp.url,
           "SHOAL_API_TOKEN_FILE": str(cp.workdir / "data" / "admin.token")}
    return subprocess.run([sys.executable, "-m", "shoal", *args], env=env, text=True,
                          capture_output=True, input=stdin, timeout=60)


def names(cp: ControlPlaneProcess, *args: str) -> set[tuple[str, str]]:
    out = shoal(cp, "get", "services", "-o", "json", *args)
    assert out.returncode == 0, out.stderr
    return {(r["metadata"]["namespace"], r["metadata"]["name"])
            for r in json.loads(out.stdout)["items"]}


def test_apply_into_a_namespace_from_a_directory_and_stdin(cp: ControlPlaneProcess,
                                                          tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("alpha"))
    (tmp_path / "b.yml").write_text(service("beta", ", labels: {tier: backend}"))
    (tmp_path / "notes.txt").write_text("not yaml: [")  # not a manifest: skipped
    done = shoal(cp, "apply", "-n", "shop", "-f", str(tmp_path))
    assert done.returncode == 0, done.stderr
    piped = shoal(cp, "apply", "-n", "shop", "-f", "-", stdin=service("gamma"))
    assert piped.returncode == 0, piped.stderr
    assert {("shop", "alpha"), ("shop", "beta"), ("shop", "gamma")} <= names(cp, "-A")
    # a document naming another namespace than -n: refused, nothing applied
    clash = shoal(cp, "apply", "-n", "shop", "-f", "-",
                  stdin=service("delta") + "---\n" + service("eps", ", namespace: books"))
    assert clash.returncode == 1
    assert "metadata.namespace" in clash.stderr and "-n books" in clash.stderr
    assert ("shop", "delta") not in names(cp)
    assert names(cp, "-n", "shop", "-l", "tier=backend") == {("shop", "beta")}
    assert ("shop", "beta") not in names(cp, "-A", "-l", "tier!=backend")
    bad = shoal(cp, "get", "services", "-l", "tier in (a, b)")
    assert bad.returncode == 1 and "set-based" in bad.stderr


def test_delete_tries_every_resource(cp: ControlPlaneProcess, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(service("one") + "---\n" + service("two") + "---\n" + service("three"))
    assert shoal(cp, "apply", "-n", "del", "-f", str(manifest)).returncode == 0
    assert shoal(cp, "delete", "services", "two", "-n", "del").returncode == 0
    # "two" is gone already: the others are still deleted, the miss is reported, exit 1
    partial = shoal(cp, "delete", "-n", "del", "-f", str(manifest))
    assert partial.returncode == 1
    assert "service/two (del) not found" in partial.stderr
    assert "service/one (del) deleted" in partial.stdout
    assert "service/three (del) deleted" in partial.stdout
    assert not {n for ns, n in names(cp, "-A") if ns == "del"}
    quiet = shoal(cp, "delete", "-n", "del", "-f", str(manifest), "--ignore-not-found")
    assert quiet.returncode == 0 and "not found" not in quiet.stderr
