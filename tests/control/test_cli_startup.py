"""The `shoal` CLI imports a verb's module only when that verb runs (shoal.cli.lazy), and
still lists every verb under its help panel, in the order it always had."""

from __future__ import annotations

import os
import subprocess
import sys

import typer
from typer.testing import CliRunner

from shoal import __version__
from shoal.cli.main import VERBS, app
from shoal.cli.run import RUN_CONTEXT_SETTINGS

# `shoal --help`: each panel and its verbs, top to bottom.
PANELS = {
    "Commands": ["version"],
    "Local mesh": ["up", "down", "status"],
    "Config": ["apply", "get", "delete", "analyze"],
    "Proxies": ["proxy-status", "proxy-config"],
    "Workloads": ["run", "gateway"],
    "Processes": ["control-plane"],
    "Identity": ["certs", "audit", "token", "authz", "ca"],
    "Observability": ["dashboard", "logs", "traces", "slo", "prometheus"],
    "Traffic": ["ratelimit", "quota"],
    "Multi-cluster": ["cluster"],
}
# What no start-up needs: the agent, xDS generation, the analyzers, the control plane.
HEAVY = ("shoal.agent", "shoal.xds", "shoal.analyze", "shoal.control.plane", "aiohttp",
         "grpc")


# `python -m shoal ARGS`, then the names of every module imported, after a marker line.
# (Not `python -X importtime`: it does not list a module imported by
# importlib.import_module, which is how a verb's module is loaded.)
PROBE = """
import runpy, sys
sys.argv[0] = "shoal"
try:
    runpy.run_module("shoal", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("--- modules ---", *sorted(sys.modules), sep="\\n")
"""


def shoal(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "SHOAL_CONTROL_PLANE": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "shoal", *args], env=env, text=True,
                          capture_output=True, timeout=60)


def imported(*args: str) -> set[str]:
    """The modules `python -m shoal ARGS` imports."""
    out = subprocess.run([sys.executable, "-c", PROBE, *args], text=True,
                         capture_output=True, timeout=60)
    assert "--- modules ---\n" in out.stdout, out.stderr
    return set(out.stdout.split("--- modules ---\n")[1].split())


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


def help_panels(text: str) -> dict[str, list[str]]:
    panels: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("╭─ "):
            name = line.removeprefix("╭─ ").split(" ─")[0]
            current = panels.setdefault(name, []) if name != "Options" else None
        elif current is not None and line.startswith("│ ") and line[2] != " ":
            current.append(line[2:].split()[0])
    return panels


def test_help_lists_every_verb_under_its_panel() -> None:
    out = shoal("--help")
    assert out.returncode == 0, out.stderr
    assert list(help_panels(out.stdout).items()) == list(PANELS.items())


def test_every_verb_resolves_to_its_command() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    ctx = typer.Context(group, info_name="shoal")
    assert group.list_commands(ctx) == [v for verbs in PANELS.values() for v in verbs]
    for verb in VERBS:
        command = group.get_command(ctx, verb.name)
        assert command is not None and command.name == verb.name
        assert getattr(command, "rich_help_panel", None) == verb.panel
    run = group.get_command(ctx, "run")
    assert run is not None and run.context_settings == RUN_CONTEXT_SETTINGS
    gateway = group.get_command(ctx, "gateway")
    assert isinstance(gateway, typer.core.TyperGroup)
    assert gateway.list_commands(ctx) == ["run"]


def test_a_mistyped_verb_gets_a_suggestion() -> None:
    out = CliRunner().invoke(app, ["gett"])
    assert out.exit_code == 2 and "Did you mean 'get'?" in out.output


def test_version_imports_no_verb() -> None:
    out = shoal("version")
    assert out.returncode == 0 and out.stdout == f"shoal {__version__}\n"
    modules = imported("version")
    assert "shoal.cli.main" in modules
    assert heavy(modules) == set()
    verb_modules = {v.target.partition(":")[0] for v in VERBS}
    assert modules & verb_modules == set()
    assert "shoal.api" not in modules  # the default URL's port is not the config model's


def test_get_imports_its_own_module_only() -> None:
    modules = imported("get", "--help")
    assert "shoal.cli.resources" in modules
    assert heavy(modules) == set()
    assert {"shoal.cli.analyze", "shoal.cli.run", "shoal.cli.gateway",
            "shoal.cli.serve"} & modules == set()
