"""The application process the agent fronts: start, wait until it listens, stop it.

The app runs in its own session (process group), so stopping it also reaches any
children it spawned and a signal to the agent's terminal group does not hit it first.
Its environment never carries the agent's credentials (:func:`without_secrets`); in a pod
it runs in a :class:`~shoal.hosts.sandbox.Sandbox` (:func:`sandbox_for`,
docs/adr/0024-pod-app-sandbox.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from shoal.agent.config import AgentConfig, Plan
from shoal.cli.credentials import shoal_home
from shoal.errors import AgentError
from shoal.hosts.netns import _LOCK as NETNS_LOCK
from shoal.hosts.sandbox import Sandbox, parse_app_user

log = logging.getLogger("shoal.agent.app")

# the agent's and the CLI's credentials (--token, --token-file, the operator token...)
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without shoal's credentials: ``SHOAL_*`` names with TOKEN, SECRET, PASSWORD
    or CREDENTIAL in them (``SHOAL_TOKEN``, ``SHOAL_TOKEN_FILE``, ``SHOAL_API_TOKEN``...),
    except the agent's own ``SHOAL_UPSTREAM_*`` (service names)."""
    return {k: v for k, v in env.items()
            if not (k.startswith("SHOAL_") and not k.startswith("SHOAL_UPSTREAM_")
                    and any(w in k for w in SECRET_WORDS))}


def sandbox_for(config: AgentConfig, plan: Plan) -> Sandbox | None:
    """In capture mode (a pod): the app user's sandbox, hiding the agent's and Envoy's
    directories (every workload's, under the temp dir), $SHOAL_HOME (credentials, the
    default control-plane data dir), the token file, the TLS key directories, the pod
    lock and ``--app-hide``. None otherwise: the app runs as the agent's user."""
    if not config.capture:
        return None
    user = config.app_user or parse_app_user(None, proxy_uid=config.proxy_uid)
    tmp = Path(tempfile.gettempdir())
    hide = [plan.run_dir, plan.envoy_dir, tmp / "shoal-run", plan.envoy_dir.parent,
            shoal_home(), *config.tls_key_dirs, NETNS_LOCK, *config.app_hide]
    if config.token_file is not None:
        hide.append(config.token_file)
    return Sandbox(user, hide=tuple(hide), private=(plan.run_dir,), port=plan.app_port)


def exit_status(returncode: int) -> int:
    """A process exit status as a shell reports it (killed by signal N -> 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


class AppProcess:
    def __init__(self, command: Sequence[str], env: Mapping[str, str],
                 sandbox: Sandbox | None = None) -> None:
        self.command = list(command)
        self.env = without_secrets(env)
        self.sandbox = sandbox
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv, env = self.command, self.env
        extra: dict[str, str] = {}
        if self.sandbox is not None:
            self.sandbox.prepare()
            try:
                cwd = os.getcwd()
            except OSError:  # removed under us
                cwd = "/"
            argv = self.sandbox.command(self.command, cwd=cwd)
            env = self.sandbox.environment(self.env)
            extra = {"user": str(self.sandbox.user)}
        try:
            self._proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as e:
            raise AgentError(f"cannot start the application {self.command[0]!r}: {e}") from e
        log.info("application started",
                 extra={"pid": self._proc.pid, "command": self.command, **extra})

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def started(self) -> bool:
        return self._proc is not None

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc else None

    async def wait_exit(self, poll_interval: float = 0.1) -> int:
        if self._proc is None:
            raise AgentError("the application was never started")
        while (code := self._proc.poll()) is None:
            await asyncio.sleep(poll_interval)
        return code

    async def wait_listening(
        self,
        host: str,
        port: int,
        timeout: float,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """True once ``host:port`` accepts TCP; False on timeout, app exit or stop request."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not should_stop() and self.poll() is None:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False

    def _killpg(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the app's process group, SIGKILL after ``grace``; returns its returncode.

        Children it left behind in its group are killed too (no stray processes)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._killpg(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait_exit(), grace)
            except TimeoutError:
                log.warning("application ignored SIGTERM; killing it",
                            extra={"pid": self._proc.pid, "grace_s": grace})
                self._killpg(signal.SIGKILL)
                await self.wait_exit()
        self._killpg(signal.SIGKILL)  # leftovers of the group, if any
        return self._proc.returncode
