"""etcd over TLS with client certificates, and etcd's own users (real etcd, no mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from shoal.api.meta import Metadata, Resource, ResourceKey
from shoal.cli.serve import control_plane
from shoal.control.config import ControlPlaneConfig
from shoal.control.plane import open_store
from shoal.errors import NotFound, StoreError, ValidationError
from shoal.registry.etcd_leases import EtcdWorkloadRegistry
from shoal.store import EventType
from shoal.store.etcd import EtcdStore
from shoal.store.etcd_client import EtcdAuthFailed, EtcdClient, EtcdUnavailable, b64
from shoal.store.etcd_security import PASSWORD_ENV, EtcdSecurity
from shoal.testing.etcd import ETCD, SKIP_REASON, EtcdServer, ServerTls
from shoal.testing.pki import TestCA
from tests.store.test_store import take

needs_etcd = pytest.mark.skipif(ETCD is None, reason=SKIP_REASON)


def res(name: str) -> Resource:
    return Resource(api_version="test.shoal.io/v1", kind="Thing",
                    metadata=Metadata(name=name), spec={"v": 1})


def key(name: str) -> ResourceKey:
    return ResourceKey("Thing", "default", name)


WORKLOAD = ResourceKey("Workload", "default", "w1")


def workload() -> Resource:
    return Resource(api_version="test.shoal.io/v1", kind="Workload",
                    metadata=Metadata(name="w1"), spec={"address": "10.0.0.1", "port": 8080})


async def lease_round_trip(store: EtcdStore) -> None:
    registry = EtcdWorkloadRegistry(store, ttl=10)
    await registry.register(workload())
    assert await store.lease_of(WORKLOAD) != 0
    assert await registry.heartbeat("default", "w1") == 10
    await registry.deregister("default", "w1")
    with pytest.raises(NotFound):
        await store.get(WORKLOAD)


# ---------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path  # trusts nothing etcd presents
    cert: Path  # shoal's client certificate: no Common Name (see the test with auth)
    key: Path
    named: tuple[Path, Path]  # a client certificate with a Common Name, and its key
    server: ServerTls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = TestCA("etcd CA")
    server = ca.leaf("etcd", dns=["localhost"], ips=["127.0.0.1"]).write(d, "server")
    client = ca.leaf(dns=["shoal-control-plane"], server=False).write(d, "client")
    named = ca.leaf("shoal", server=False).write(d, "named")
    ca_file = ca.write(d / "ca.pem")
    return Pki(ca_file, TestCA("other CA").write(d / "other.pem"), client.cert, client.key,
               (named.cert, named.key),
               ServerTls(ca_file, server.cert, server.key, client_cert_auth=True,
                         probe_cert=client.cert, probe_key=client.key))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    if ETCD is None:
        pytest.skip(SKIP_REASON)
    s = EtcdServer(tmp_path_factory.mktemp("tls") / "etcd", tls=pki.server)
    s.start()
    yield s
    s.stop()


@needs_etcd
async def test_the_store_works_over_tls_with_a_client_certificate(
    tls_server: EtcdServer, pki: Pki
) -> None:
    assert tls_server.url.startswith("https://")
    store = EtcdStore([tls_server.url], security=EtcdSecurity(ca=pki.ca, cert=pki.cert,
                                                              key=pki.key))
    try:
        watch = store.watch(since=await store.revision())
        await store.apply([res("over-tls")])
        assert (await store.get(key("over-tls"))).spec == {"v": 1}
        [event] = await take(watch, 1)
        assert (event.type, event.key) == (EventType.PUT, key("over-tls"))
        await watch.aclose()
        await lease_round_trip(store)
    finally:
        await store.close()


@needs_etcd
async def test_the_control_plane_opens_its_store_with_these_settings(
    tls_server: EtcdServer, pki: Pki, tmp_path: Path
) -> None:
    config = ControlPlaneConfig(
        data_dir=tmp_path, store="etcd", etcd_endpoints=(tls_server.url,),
        etcd_security=EtcdSecurity(ca=pki.ca, cert=pki.cert, key=pki.key))
    store = open_store(config)
    try:
        assert isinstance(store, EtcdStore)
        await store.revision()
    finally:
        await store.close()


@needs_etcd
@pytest.mark.parametrize("case", ["no client certificate", "a CA that did not sign etcd's"])
async def test_a_tls_mismatch_fails_at_once_naming_tls(
    tls_server: EtcdServer, pki: Pki, case: str
) -> None:
    security = (EtcdSecurity(ca=pki.ca) if case == "no client certificate"
                else EtcdSecurity(ca=pki.other_ca, cert=pki.cert, key=pki.key))
    store = EtcdStore([tls_server.url], security=security)
    try:
        async with asyncio.timeout(10):  # a failure, not a hang
            with pytest.raises(EtcdUnavailable, match=r"TLS (handshake failed|connection "
                               r"closed)") as info:
                await store.revision()
        assert isinstance(info.value, StoreError)
        assert "--etcd-cert" in str(info.value)
    finally:
        await store.close()


@needs_etcd
async def test_tls_client_certificates_and_an_etcd_user_together(
    pki: Pki, tmp_path: Path
) -> None:
    server = EtcdServer(tmp_path / "etcd", tls=pki.server, args=["--bcrypt-cost=4"])
    server.start()
    tls = {"ca": pki.ca, "cert": pki.cert, "key": pki.key}
    root = EtcdClient([server.url], security=EtcdSecurity(**tls, user=ROOT.user,
                                                          password=ROOT.password))
    store = EtcdStore([server.url], security=EtcdSecurity(**tls, user=SHOAL.user,
                                                          password=SHOAL.password))
    anonymous = EtcdStore([server.url], security=EtcdSecurity(**tls))
    cert, key_file = pki.named
    named = EtcdStore([server.url], security=EtcdSecurity(
        ca=pki.ca, cert=cert, key=key_file, user=SHOAL.user, password=SHOAL.password))
    try:
        await enable_auth(root)
        await store.apply([res("both")])
        await drop_tokens(root)
        assert (await store.get(key("both"))).spec == {"v": 1}
        with pytest.raises(StoreError, match="give --etcd-user"):
            await anonymous.get(key("both"))
        # with auth on, etcd's JSON gateway refuses any client certificate with a CN
        with pytest.raises(StoreError, match="without one"):
            await named.get(key("both"))
    finally:
        await store.close()
        await anonymous.close()
        await named.close()
        await root.aclose()
        server.stop()


@needs_etcd
async def test_plain_http_to_a_tls_endpoint_says_use_https(tls_server: EtcdServer) -> None:
    store = EtcdStore([tls_server.url.replace("https://", "http://")])
    try:
        with pytest.raises(EtcdUnavailable, match="use https://"):
            await store.revision()
    finally:
        await store.close()


# ---------------------------------------------------------------------- etcd users

ROOT = EtcdSecurity(user="root", password="root-secret")
SHOAL = EtcdSecurity(user="shoal", password="shoal-secret")


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """Plain http on loopback (allowed for credentials); auth is enabled by the test."""
    if ETCD is None:
        pytest.skip(SKIP_REASON)
    s = EtcdServer(tmp_path / "etcd", args=["--bcrypt-cost=4"])
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def root(auth_server: EtcdServer) -> AsyncIterator[EtcdClient]:
    """etcd's root user (before auth is on, its calls go without a token)."""
    client = EtcdClient([auth_server.url], security=ROOT)
    yield client
    await client.aclose()


async def enable_auth(root: EtcdClient) -> None:
    """root, and a `shoal` user whose role may read and write the keys under /shoal/."""
    for path, body in [
        ("/v3/auth/user/add", {"name": "root", "password": ROOT.password}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/user/add", {"name": "shoal", "password": SHOAL.password}),
        ("/v3/auth/role/add", {"name": "shoal"}),
        ("/v3/auth/role/grant", {"name": "shoal", "perm": {
            "key": b64(b"/shoal/"), "range_end": b64(b"/shoal0"), "permType": "READWRITE"}}),
        ("/v3/auth/user/grant", {"user": "shoal", "role": "shoal"}),
        ("/v3/auth/enable", {}),
    ]:
        await root.call(path, body)


async def drop_tokens(root: EtcdClient) -> None:
    """Turning auth off and on drops every simple token etcd issued (as a restart, or
    the idle --auth-token-ttl, would), at once and deterministically."""
    await root.call("/v3/auth/disable", {})
    await root.call("/v3/auth/enable", {})


async def test_a_user_works_before_and_after_etcd_turns_auth_on(
    auth_server: EtcdServer, root: EtcdClient
) -> None:
    store = EtcdStore([auth_server.url], security=SHOAL)
    try:
        await store.apply([res("before")])  # auth off: calls go without a token
        await enable_auth(root)
        anonymous = EtcdStore([auth_server.url])
        with pytest.raises(StoreError, match="authentication on: give --etcd-user"):
            await anonymous.get(key("before"))
        await anonymous.close()
        # etcd now asks for a user ("user name is empty"): the store authenticates
        assert (await store.get(key("before"))).spec == {"v": 1}
        watch = store.watch(since=await store.revision())
        await store.apply([res("after")])
        assert [e.key for e in await take(watch, 1)] == [key("after")]
        await watch.aclose()
        await lease_round_trip(store)
    finally:
        await store.close()


async def test_a_wrong_password_or_a_key_outside_the_role_fails_clearly(
    auth_server: EtcdServer, root: EtcdClient
) -> None:
    await enable_auth(root)
    wrong = EtcdStore([auth_server.url], security=EtcdSecurity(user="shoal", password="nope"))
    outside = EtcdStore([auth_server.url], prefix="/other/", security=SHOAL)
    try:
        with pytest.raises(EtcdAuthFailed, match=r"refused user 'shoal'.*password") as info:
            await wrong.revision()
        assert isinstance(info.value, StoreError)
        with pytest.raises(StoreError, match=r"permission denied.*readwrite"):
            await outside.apply([res("x")])
    finally:
        await wrong.close()
        await outside.close()


async def test_the_store_keeps_working_when_etcd_drops_its_token(
    auth_server: EtcdServer, root: EtcdClient, caplog: pytest.LogCaptureFixture
) -> None:
    await enable_auth(root)
    store = EtcdStore([auth_server.url], security=SHOAL)
    registry = EtcdWorkloadRegistry(store, ttl=10)

    def logins() -> int:
        return sum(r.message == "authenticated to etcd" and getattr(r, "user", "") == "shoal"
                   for r in caplog.records)

    caplog.set_level("INFO", logger="shoal.store.etcd_client")
    try:
        await registry.register(workload())
        watch = store.watch(since=await store.revision())
        assert logins() == 1
        await drop_tokens(root)
        # a call: etcd answers "invalid auth token"; one new token, the call is retried
        await store.apply([res("x")])
        assert [e.key for e in await take(watch, 1)] == [key("x")]  # its stream lives on
        assert logins() == 2
        await drop_tokens(root)
        assert await registry.heartbeat("default", "w1") == 10  # lease keepalive too
        assert logins() == 3
        await drop_tokens(root)
        # a new watch stream with the dropped token: etcd cancels it; reopened once
        async with store.client.watch(b"/shoal/", b"/shoal0", 1) as results:
            first = await anext(aiter(results))
        assert first.get("created") and not first.get("canceled"), first
        assert logins() == 4
        # concurrent callers that all find the token dropped renew it once, together
        await drop_tokens(root)
        got = await asyncio.gather(*(store.get(key("x")) for _ in range(10)))
        assert {r.key for r in got} == {key("x")}
        assert logins() == 5
        await watch.aclose()
    finally:
        await store.close()


# ---------------------------------------------------------------------- settings


def paths(violations: Any) -> list[str]:
    return [v.path for v in violations]


def test_incomplete_or_insecure_combinations_are_refused_together() -> None:
    security = EtcdSecurity(cert=Path("c.pem"), user="shoal")
    with pytest.raises(ValidationError) as info:
        security.check(["https://etcd:2379"])
    assert paths(info.value.violations) == ["--etcd-cert", "--etcd-user"]
    assert "needs --etcd-key" in str(info.value)
    with pytest.raises(ValidationError, match="--etcd-key: a client key needs --etcd-cert"):
        EtcdSecurity(key=Path("k.pem")).check(["https://etcd:2379"])
    with pytest.raises(ValidationError, match=r"a password was given .* but no user"):
        EtcdSecurity(password="pw").check(["https://etcd:2379"])
    with pytest.raises(ValidationError, match=r"TLS options .* need https://"):
        EtcdSecurity(ca=Path("ca.pem")).check(["http://etcd:2379"])
    with pytest.raises(ValidationError, match="must start with http:// or https://"):
        EtcdSecurity().check(["etcd:2379"])


def test_credentials_in_clear_only_to_loopback_or_when_told() -> None:
    plaintext = ["http://10.0.0.1:2379"]
    with pytest.raises(ValidationError, match=r"in clear.*--insecure-etcd-plaintext-auth"):
        SHOAL.check(plaintext)
    EtcdSecurity(user="shoal", password="pw", insecure_plaintext_auth=True).check(plaintext)
    SHOAL.check(["https://10.0.0.1:2379", "http://127.0.0.1:2379", "http://localhost:2379",
                 "http://[::1]:2379"])
    EtcdSecurity().check(plaintext)  # no credentials: nothing to leak
    with pytest.raises(ValidationError):  # the client refuses them too
        EtcdClient(plaintext, security=SHOAL)


def test_the_password_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret \n")
    from_file = EtcdSecurity.from_options(user="shoal", password_file=secret,
                                          env={PASSWORD_ENV: "from-env"})
    assert from_file.password == "s3cret "  # the file wins; only the newline is dropped
    assert EtcdSecurity.from_options(user="shoal", env={PASSWORD_ENV: "e"}).password == "e"
    assert "s3cret" not in repr(from_file)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValidationError, match="--etcd-password-file: the file is empty"):
        EtcdSecurity.from_options(user="shoal", password_file=tmp_path / "empty", env={})
    with pytest.raises(ValidationError, match="--etcd-password-file: cannot read"):
        EtcdSecurity.from_options(user="shoal", password_file=tmp_path / "missing", env={})


def test_unreadable_tls_files_name_their_flag(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="--etcd-ca: cannot load"):
        EtcdSecurity(ca=tmp_path / "missing.pem").ssl_context()
    with pytest.raises(ValidationError, match="--etcd-cert: cannot load"):
        EtcdSecurity(cert=tmp_path / "c.pem", key=tmp_path / "k.pem").ssl_context()


def test_the_control_plane_command_refuses_insecure_etcd_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    monkeypatch.setattr("shoal.cli.serve.configure_logging", lambda level: None)
    with pytest.raises(typer.BadParameter, match="in clear"):
        control_plane(store="etcd", etcd_endpoints="http://10.0.0.1:2379", etcd_user="shoal",
                      data_dir=tmp_path, log_level="error")
    with pytest.raises(typer.BadParameter, match="need --store etcd"):
        control_plane(store="memory", etcd_user="shoal", data_dir=tmp_path, log_level="error")
