"""The application process the agent fronts: start, wait until it listens, stop it.

The app runs in its own session (process group), so stopping it also reaches any
children it spawned and a signal to the agent's terminal group does not hit it first.
Its environment never carries the agent's credentials (:func:`without_secrets`); in a pod
it runs in a :class:`~shoal.hosts.sandbox.Sandbox` (:func:`sandbox_for`,
docs/adr/0024-pod-app-sandbox.md). With ``--app-socket`` it listens on a Unix socket in a
private directory (:func:`prepare_socket_dir`, docs/adr/0026-app-unix-socket.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
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


def prepare_socket_dir(socket: Path) -> None:
    """Make ``socket``'s directory private (ours, mode 0700) before the app creates the
    socket there, and remove a stale socket left by an earlier run. Refused when the
    directory, or any directory above it, could be renamed or replaced by another user
    (not owned by root or us, or writable by others without the sticky bit): then the
    socket would not be private however its own directory is."""
    directory, uid = socket.parent, os.getuid()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            raise AgentError(f"--app-socket: {directory} is not a directory owned by uid "
                             f"{uid}")
        os.chmod(directory, 0o700)
        for above in directory.parents:
            st = os.stat(above)
            if st.st_uid not in (0, uid) or (
                    st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
                raise AgentError(f"--app-socket: {above} can be changed by other users, so "
                                 "the app's socket below it would not be private; choose "
                                 "another --run-dir")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(socket).st_mode):
                socket.unlink()
    except OSError as e:
        raise AgentError(f"--app-socket: cannot prepare {directory}: {e}") from e


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
        *,
        socket: Path | None = None,
    ) -> bool:
        """True once ``host:port`` (or the Unix ``socket``, when given) accepts a
        connection; False on timeout, app exit or stop request."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not should_stop() and self.poll() is None:
            connect = asyncio.open_unix_connection(socket) if socket is not None \
                else asyncio.open_connection(host, port)
            try:
                _, writer = await asyncio.wait_for(connect, 1.0)
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
