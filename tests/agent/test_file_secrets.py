"""Certificate files of TLS origination served by the agent's SDS server (no Envoy)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sds_stream import sds_stream, secrets_of

from shoal.agent.file_secrets import FileSecrets
from shoal.agent.sds import SdsServer
from shoal.testing.pki import TestCA
from shoal.xds import secret_names


def test_loads_certificates_keys_roots_and_crls(tmp_path: Path) -> None:
    ca = TestCA()
    ca_file = ca.write(tmp_path / "ca.pem")
    client = ca.leaf("client", server=False).write(tmp_path, "client")
    crl = tmp_path / "ca.crl"
    crl.write_bytes(ca.crl())
    files = FileSecrets(key_dirs=[tmp_path])
    cert = files.get(secret_names.cert_secret(str(client.cert), str(client.key)))
    assert cert is not None
    assert cert.tls_certificate.certificate_chain.inline_bytes == client.cert.read_bytes()
    assert cert.tls_certificate.private_key.inline_bytes == client.key.read_bytes()
    roots = files.get(secret_names.root_secret(str(ca_file), str(crl)))
    assert roots is not None
    assert roots.validation_context.trusted_ca.inline_bytes == ca.pem
    assert roots.validation_context.crl.inline_bytes == crl.read_bytes()
    system = files.get(secret_names.root_secret(None))
    assert system is not None and b"BEGIN CERTIFICATE" in \
        system.validation_context.trusted_ca.inline_bytes
    assert files.get("default") is None  # not a file secret


def test_refuses_what_envoy_would_reject(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    ca = TestCA()
    ca_file = ca.write(tmp_path / "ca.pem")
    a = ca.leaf("a", server=False).write(tmp_path, "a")
    b = ca.leaf("b", server=False).write(tmp_path, "b")
    (tmp_path / "junk.pem").write_text("hello\n")
    files = FileSecrets(key_dirs=[tmp_path])
    assert files.get(secret_names.cert_secret(str(a.cert), str(b.key))) is None  # wrong key
    assert files.get(secret_names.root_secret(str(tmp_path / "junk.pem"))) is None
    assert files.get(secret_names.root_secret(str(tmp_path / "missing.pem"))) is None
    assert files.get(secret_names.root_secret(str(ca_file), str(a.cert))) is None  # no CRL
    text = caplog.text
    assert "does not belong to the certificate" in text
    assert "not PEM certificates" in text and "No such file" in text and "not a PEM CRL" in text


def test_keys_only_from_the_key_directories(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    ca = TestCA()
    inside = ca.leaf("inside", server=False).write(tmp_path / "keys", "inside")
    outside = ca.leaf("outside", server=False).write(tmp_path / "elsewhere", "outside")
    files = FileSecrets(key_dirs=[tmp_path / "keys"])
    assert files.get(secret_names.cert_secret(str(inside.cert), str(inside.key))) is not None
    assert files.get(secret_names.cert_secret(str(outside.cert), str(outside.key))) is None
    # neither a symlink nor ".." inside the directory reaches a key outside it
    (tmp_path / "keys" / "link.key").symlink_to(outside.key)
    (tmp_path / "keys" / "link.pem").symlink_to(outside.cert)
    link = tmp_path / "keys" / "link"
    assert files.get(secret_names.cert_secret(f"{link}.pem", f"{link}.key")) is None
    dotdot = tmp_path / "keys" / ".." / "elsewhere" / "outside"
    assert files.get(secret_names.cert_secret(f"{dotdot}.pem", f"{dotdot}.key")) is None
    # a directory named like the allowed one plus a suffix is not inside it
    near = ca.leaf("near", server=False).write(tmp_path / "keys-not", "near")
    assert files.get(secret_names.cert_secret(str(near.cert), str(near.key))) is None
    assert "outside the directories this agent reads TLS keys from" in caplog.text
    assert f"clientCertificate {outside.cert}" in caplog.text
    # roots are public: readable anywhere
    assert files.get(secret_names.root_secret(str(ca.write(tmp_path / "any" / "ca.pem"))))
    # the default is /etc/shoal/certs only
    assert FileSecrets().get(secret_names.cert_secret(str(inside.cert), str(inside.key))) \
        is None


def test_refresh_picks_up_new_and_changed_files_and_keeps_the_last_good(tmp_path: Path) -> None:
    ca = TestCA()
    path = tmp_path / "roots.pem"
    name = secret_names.root_secret(str(path))
    files = FileSecrets()
    assert files.get(name) is None  # not there yet
    assert files.refresh() == set()
    path.write_bytes(ca.pem)
    assert files.refresh() == {name}
    first = files.get(name)
    assert first is not None
    path.write_bytes(TestCA("other").pem + b"\n")
    assert files.refresh() == {name}
    assert files.get(name) != first
    path.write_text("broken")
    os.utime(path, ns=(1, 1))
    assert files.refresh() == set()  # broken: the last good content stays served
    assert files.get(name) is not None


async def test_sds_answers_a_file_secret_once_it_can(tmp_path: Path) -> None:
    ca = TestCA()
    path = tmp_path / "roots.pem"
    name = secret_names.root_secret(str(path))
    sds = SdsServer(None, tmp_path / "sds.sock", file_poll_seconds=0.1)  # no identity
    await sds.start()
    try:
        async with sds_stream(sds.path) as stream:
            await stream.request([name])
            read = stream.read()
            await asyncio.sleep(0.5)  # several polls: no answer while the file is missing
            assert not read.done()
            path.write_bytes(ca.pem)
            first = await asyncio.wait_for(read, 20)
            [secret] = secrets_of(first).values()
            assert secret.name == name
            assert secret.validation_context.trusted_ca.inline_bytes == ca.pem
            await stream.request([name], ack=first)
            path.write_bytes(TestCA("other").pem)  # rotated on disk: pushed again
            second = await asyncio.wait_for(stream.read(), 20)
            assert second.version_info != first.version_info
    finally:
        await sds.stop()
