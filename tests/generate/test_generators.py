"""The generator interface (issue 13 part 1): one generator per concern, each declaring
the kinds it depends on, put together in precedence order."""

from __future__ import annotations

from shoal.api.kinds import KINDS
from shoal.xds.generate import (
    GENERATORS,
    PATCH_INPUTS,
    GenerationContext,
    generate,
    inbound,
    names,
    outbound,
    outbound_http,
)
from shoal.xds.sync import NOT_PROXY_CONFIG
from shoal.xds.types import LISTENER, Upstream
from tests.generate import conftest
from tests.generate.conftest import GOLDEN_PROXIES, load_mesh


def test_every_kind_is_an_input_of_a_generator_or_of_no_proxy_config() -> None:
    """A kind nobody declares would change no proxy's config after the first: the
    tables that depend on it would be taken over from the previous snapshot."""
    declared = set(PATCH_INPUTS).union(*(g.inputs for g in GENERATORS))
    assert declared <= set(KINDS)
    assert set(KINDS) - declared == set(NOT_PROXY_CONFIG)
    assert len({g.name for g in GENERATORS}) == len(GENERATORS)


def test_tables_are_taken_over_when_a_change_touches_none_of_their_inputs() -> None:
    before = GenerationContext(load_mesh())
    proxy = GOLDEN_PROXIES["reviews-v2.default"]
    generate(before, proxy)
    routing = GenerationContext(load_mesh(revision=8), before, frozenset({"VirtualService"}))
    assert outbound.table(routing) is outbound.table(before)
    policy = GenerationContext(load_mesh(revision=9), routing,
                               frozenset({"PeerAuthentication"}))
    assert outbound.table(policy) is not outbound.table(routing)
    snap_policy = generate(policy, proxy)
    # an inbound listener depends on PeerAuthentication: rebuilt, equal in content
    name = next(n for n in snap_policy.get(LISTENER).items if n.startswith("inbound|"))
    assert "PeerAuthentication" in inbound.INPUTS and "VirtualService" not in inbound.INPUTS
    assert snap_policy.get(LISTENER).items[name] == generate(before, proxy).get(
        LISTENER).items[name]
    assert "VirtualService" not in outbound_http.SCOPE_INPUTS


def test_a_listener_on_a_taken_address_is_left_out() -> None:
    """Precedence: an upstream port declared on the outbound_http port gets no listener
    (outbound_http comes first); the app's other upstream ports keep theirs."""
    proxy = conftest.proxy("productpage-v1", app_ports={"http": 9080}, upstreams=(
        Upstream("mongodb", 27017, 15001), Upstream("catalog.shop", 50051, 16051)))
    listeners = generate(GenerationContext(load_mesh()), proxy).get(LISTENER).items
    ports = sorted(lis.address.socket_address.port_value for lis in listeners.values()
                   if lis.address.socket_address.address == "127.0.0.1")
    assert ports == [15001, 16051]
    assert names.OUTBOUND_HTTP in listeners
