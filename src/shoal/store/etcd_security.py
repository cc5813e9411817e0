"""How the control plane talks to etcd securely: TLS, client certificates, etcd users.

See docs/adr/0023-etcd-tls-and-auth.md. :class:`EtcdSecurity` only holds and checks the
settings; :class:`~shoal.store.etcd_client.EtcdClient` uses them (its TLS context, and
etcd's token protocol: authenticate, send the token, renew it when etcd refuses it).

The rules, checked all at once by :meth:`EtcdSecurity.check` (a
:class:`~shoal.errors.ValidationError` naming each offending flag):

* a client certificate needs its key, and a key its certificate;
* a CA or a client certificate only makes sense with ``https://`` endpoints — given with
  an ``http://`` endpoint it would be silently unused, so it is refused;
* an etcd user needs a password (``--etcd-password-file`` or ``$SHOAL_ETCD_PASSWORD``),
  and a password needs a user;
* credentials are not sent in clear over the network: with a user, every ``http://``
  endpoint must be a loopback address, unless ``insecure_plaintext_auth``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shoal.errors import ValidationError, Violation
from shoal.netaddr import is_loopback

#: Where the password comes from when no --etcd-password-file is given.
PASSWORD_ENV = "SHOAL_ETCD_PASSWORD"


@dataclass(frozen=True)
class EtcdSecurity:
    """TLS files and etcd credentials; the default is plain, unauthenticated etcd."""

    ca: Path | None = None  # CA bundle verifying the etcd servers (default: the system's)
    cert: Path | None = None  # client certificate, for etcd's --client-cert-auth
    key: Path | None = None  # its private key
    user: str | None = None  # an etcd user (etcd's own authentication)
    password: str | None = field(default=None, repr=False)
    insecure_plaintext_auth: bool = False  # allow credentials over http:// to other hosts

    @classmethod
    def from_options(
        cls,
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        user: str | None = None,
        password_file: Path | None = None,
        insecure_plaintext_auth: bool = False,
        env: Mapping[str, str] = os.environ,
    ) -> EtcdSecurity:
        """The settings as the CLI gives them: the password is read from
        ``password_file`` (one trailing newline dropped) or else from ``$SHOAL_ETCD_PASSWORD``."""
        password = env.get(PASSWORD_ENV) or None
        if password_file is not None:
            try:
                password = password_file.read_text().rstrip("\r\n")
            except OSError as e:
                raise ValidationError(
                    [Violation("--etcd-password-file", f"cannot read: {e.strerror or e}")]
                ) from e
            if not password:
                raise ValidationError([Violation("--etcd-password-file", "the file is empty")])
        return cls(ca=ca, cert=cert, key=key, user=user or None, password=password,
                   insecure_plaintext_auth=insecure_plaintext_auth)

    @property
    def tls_files(self) -> bool:
        return any(p is not None for p in (self.ca, self.cert, self.key))

    def violations(self, endpoints: Sequence[str]) -> list[Violation]:
        found: list[Violation] = []
        if self.cert is not None and self.key is None:
            found.append(Violation("--etcd-cert", "a client certificate needs --etcd-key"))
        if self.key is not None and self.cert is None:
            found.append(Violation("--etcd-key", "a client key needs --etcd-cert"))
        if self.user is not None and not self.password:
            found.append(Violation("--etcd-user", "needs a password: --etcd-password-file "
                                                  f"or ${PASSWORD_ENV}"))
        if self.password and self.user is None:
            found.append(Violation("--etcd-user", "a password was given (--etcd-password-"
                                   f"file or ${PASSWORD_ENV}) but no user"))
        for endpoint in endpoints:
            scheme, host = _scheme_and_host(endpoint)
            if scheme not in ("http", "https"):
                found.append(Violation("--etcd-endpoints",
                                       f"{endpoint}: must start with http:// or https://"))
            elif scheme == "http" and self.tls_files:
                found.append(Violation("--etcd-endpoints", f"{endpoint} is plaintext: TLS "
                                       "options (--etcd-ca/--etcd-cert/--etcd-key) need "
                                       "https:// endpoints"))
            elif (scheme == "http" and self.user is not None and not is_loopback(host)
                  and not self.insecure_plaintext_auth):
                found.append(Violation("--etcd-endpoints", f"{endpoint} is plaintext to "
                                       "another host: the etcd password and token would "
                                       "cross the network in clear; use https:// (or "
                                       "--insecure-etcd-plaintext-auth)"))
        return found

    def check(self, endpoints: Sequence[str]) -> None:
        """Raise ValidationError listing every insecure or incomplete combination."""
        found = self.violations(endpoints)
        if found:
            raise ValidationError(found)

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies servers against ``ca`` (or the system's CAs), presents ``cert``."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        except (OSError, ssl.SSLError) as e:
            raise ValidationError([Violation("--etcd-ca", f"cannot load {self.ca}: {e}")]) from e
        if self.cert is not None and self.key is not None:
            try:
                context.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as e:
                raise ValidationError([Violation(
                    "--etcd-cert", f"cannot load {self.cert} with key {self.key}: {e}")]) from e
        return context


def _scheme_and_host(endpoint: str) -> tuple[str, str]:
    parts = urlsplit(endpoint)
    return parts.scheme.lower(), parts.hostname or ""
