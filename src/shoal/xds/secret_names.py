"""Names of the file-backed secrets of TLS origination (DestinationRule ``tls`` SIMPLE /
MUTUAL), shared by the generators (which reference them over SDS) and the agent (which
reads the files and serves them). Istio's spelling:

* ``file-cert:<certificate>~<key>`` -- a client certificate chain and its private key;
* ``file-root:<ca bundle>`` -- roots to verify the server with; ``file-root:system`` means
  the host's own trust store (the agent finds it); ``~<crl>`` appended: with a CRL.

Paths are absolute and never contain ``~`` (the API rejects it), so names parse back.
"""

from __future__ import annotations

from dataclasses import dataclass

FILE_CERT = "file-cert:"
FILE_ROOT = "file-root:"
SYSTEM = "system"  # file-root:system -> the host's trust store


def cert_secret(cert: str, key: str) -> str:
    return f"{FILE_CERT}{cert}~{key}"


def root_secret(ca: str | None, crl: str | None = None) -> str:
    return f"{FILE_ROOT}{ca or SYSTEM}" + (f"~{crl}" if crl else "")


@dataclass(frozen=True)
class FileSecret:
    """A parsed file secret name: a certificate (cert + key) or roots (ca [+ crl])."""

    name: str
    cert: str = ""
    key: str = ""
    ca: str = ""  # "" = the system trust store
    crl: str = ""

    @property
    def is_certificate(self) -> bool:
        return bool(self.cert)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert, self.key, self.ca, self.crl) if p)


def parse(name: str) -> FileSecret | None:
    """The files a secret name stands for; None if it is not a (well-formed) file secret."""
    if name.startswith(FILE_CERT):
        cert, sep, key = name[len(FILE_CERT):].partition("~")
        if sep and _absolute(cert) and _absolute(key):
            return FileSecret(name, cert=cert, key=key)
        return None
    if name.startswith(FILE_ROOT):
        ca, sep, crl = name[len(FILE_ROOT):].partition("~")
        if (ca == SYSTEM or _absolute(ca)) and (not sep or _absolute(crl)):
            return FileSecret(name, ca="" if ca == SYSTEM else ca, crl=crl)
    return None


def _absolute(path: str) -> bool:
    return path.startswith("/") and "~" not in path
