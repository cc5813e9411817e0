"""The application's sandbox in a pod (docs/adr/0024-pod-app-sandbox.md).

In capture mode the agent runs as root inside the pod's network namespace; the app it
starts must not inherit that. :meth:`Sandbox.command` wraps the app's command line:

* ``unshare --pid --fork --kill-child --mount-proc --propagation slave``: its own PID
  namespace (it sees and signals only its own processes; /proc is remounted for it) and
  mount namespace (mounts and unmounts of the host still reach it, its own do not leave);
* a small ``sh`` init, root and PID 1 of that namespace, which hides shoal's secrets —
  each directory of :attr:`Sandbox.hide` under an empty read-only tmpfs, each file under
  ``/dev/null`` — lets the app bind its port if it is below 1024, runs the app as its
  child and exits with its status (an unhandled SIGTERM to a namespace's PID 1 is
  dropped: the app must not be PID 1, and the init must not forward what the agent's
  ``killpg`` already delivers);
* ``setpriv``: the app user's uid/gid, its supplementary groups (checked: never 0 or the
  proxy's; none for a bare uid), every capability gone (inheritable, ambient, bounding set) and
  ``no_new_privs`` (setuid binaries give nothing);
* a last ``sh`` as that user: back to the working directory *by path* (so into the tmpfs
  if it was hidden), or ``/`` when the user may not enter it, then ``exec`` the app.

The app's environment is the caller's business (:mod:`shoal.agent.app` strips the agent's
secrets); :meth:`Sandbox.environment` only sets HOME, USER and LOGNAME for the app user.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import AgentError
from shoal.hosts.netns import HostError

DEFAULT_APP_USER = "nobody"  # and its primary group (Debian: nogroup), both 65534
NOBODY = 65534  # when this host has no "nobody" user
PROXY_UID = 1337  # the sidecar's uid (shoal.hosts.capture.PROXY_UID)
TOOLS = (("unshare", "util-linux"), ("setpriv", "util-linux"), ("mount", "util-linux"),
         ("sh", "dash"))

# PID 1 of the app's namespaces, root: $1 = the app's port, then paths to hide, "--", the
# (setpriv'd) command. Runs the command as a child (never exec: see the module doc).
INIT = r"""
port=$1; shift
start=/proc/sys/net/ipv4/ip_unprivileged_port_start
if [ "$port" -gt 0 ] && [ "$port" -lt "$(cat $start 2>/dev/null || echo 0)" ]; then
  { echo "$port" > $start; } 2>/dev/null
fi
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
  if [ -d "$1" ]; then
    mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k,mode=0755 shoal-hidden "$1" || exit 126
  elif [ -e "$1" ]; then
    mount --bind /dev/null "$1" || exit 126
  fi
  shift
done
shift
"$@"
exit $?
"""

# The last step, as the app user: $1 = working directory, then the app's command.
ENTER = r"""
cd -- "$1" 2>/dev/null || cd /
shift
if ! command -v -- "$1" >/dev/null 2>&1; then
  echo "shoal: cannot run $1 as uid $(id -u): not found, or not executable by that user" \
       "(--app-user; docs/hosts.md)" >&2
  exit 127
fi
exec "$@"
"""


@dataclass(frozen=True)
class AppUser:
    """Who the app runs as. ``groups``: its supplementary groups (those /etc/group gives
    a user named by name; none for a bare uid)."""

    uid: int
    gid: int
    name: str | None = None
    home: str = "/"
    groups: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.name or self.uid}({self.uid}):{self.gid}"


def check_app_user(user: AppUser, *, proxy_uid: int = PROXY_UID, flag: str = "--app-user"
                   ) -> None:
    """Refuse root and the sidecar's ids (raises AgentError naming ``flag``)."""
    if 0 in (user.uid, user.gid, *user.groups):
        raise AgentError(f"{flag} {user}: the app may not run as root (uid, group or "
                         "supplementary group 0) in a pod")
    if proxy_uid in (user.uid, user.gid, *user.groups):
        raise AgentError(f"{flag} {user}: {proxy_uid} is the sidecar's uid (--proxy-uid); "
                         "the app's traffic would not be captured")


def _passwd(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def _id(text: str, what: str, spec: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32 - 1:
        raise AgentError(f"--app-user {spec!r}: {what} {value} out of range")
    return value


def parse_app_user(text: str | None, *, proxy_uid: int = PROXY_UID) -> AppUser:
    """``USER|UID[:GROUP|GID]`` (default ``nobody`` and its primary group) -> AppUser.

    A name must exist in /etc/passwd (/etc/group for a group); a bare uid need not, and
    then its group defaults to the same number."""
    spec = text if text is not None else DEFAULT_APP_USER
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise AgentError(f"--app-user {spec!r}: expected USER|UID[:GROUP|GID]")
    if user.isdigit():
        uid = _id(user, "uid", spec)
        entry = _passwd(uid)
    else:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            if text is None:  # no "nobody" here: the conventional number
                return AppUser(NOBODY, NOBODY)
            raise AgentError(f"--app-user {spec!r}: no user {user!r} on this host") from None
        uid = entry.pw_uid
    if not group:
        gid = entry.pw_gid if entry else uid
    elif group.isdigit():
        gid = _id(group, "gid", spec)
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise AgentError(f"--app-user {spec!r}: no group {group!r} on this host") from None
    home = entry.pw_dir if entry and os.path.isdir(entry.pw_dir) else "/"
    name = entry.pw_name if entry and not user.isdigit() else None
    groups = tuple(sorted(set(os.getgrouplist(name, gid)) - {gid})) if name else ()
    app_user = AppUser(uid, gid, name, home, groups)
    check_app_user(app_user, proxy_uid=proxy_uid)
    return app_user


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HostError(f"`{name}` not found (apt-get install {package}): needed to run the "
                        "app in its sandbox")
    return path


@dataclass(frozen=True)
class Sandbox:
    """How the app of a pod is run: as ``user``, in its own PID and mount namespaces,
    with ``hide`` emptied in its view, allowed to bind ``port`` even below 1024.
    ``private``: directories only root needs, made 0700 before the app starts."""

    user: AppUser
    hide: tuple[Path, ...] = ()
    private: tuple[Path, ...] = ()
    port: int = 0

    def prepare(self) -> None:
        for directory in self.private:
            if directory.is_dir() and directory.stat().st_uid == os.geteuid():
                directory.chmod(0o700)

    def command(self, argv: Sequence[str], cwd: str | os.PathLike[str] = "/") -> list[str]:
        """``argv`` run in the sandbox, starting in ``cwd`` (or ``/``); raises HostError
        when a tool is missing."""
        tool = {name: _tool(name, package) for name, package in TOOLS}
        groups = f"--groups={','.join(map(str, self.user.groups))}" if self.user.groups \
            else "--clear-groups"
        return [
            tool["unshare"], "--pid", "--fork", "--kill-child", "--mount-proc",
            "--propagation", "slave", "--",
            tool["sh"], "-c", INIT, "shoal-sandbox", str(self.port),
            *(str(p) for p in _unique(self.hide)), "--",
            tool["setpriv"], f"--reuid={self.user.uid}", f"--regid={self.user.gid}", groups,
            "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs",
            "--", tool["sh"], "-c", ENTER, "shoal-app", os.fspath(cwd), *argv,
        ]

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with HOME, USER and LOGNAME of the app user."""
        out = dict(env)
        out["HOME"] = self.user.home
        name = self.user.name or str(self.user.uid)
        out["USER"] = out["LOGNAME"] = name
        return out


def _unique(paths: Iterable[Path]) -> list[Path]:
    """Absolute, sorted, without duplicates or paths inside another one (hidden with it)."""
    every = {Path(os.path.abspath(p)) for p in paths}
    return sorted(p for p in every if not any(a in every for a in p.parents))
