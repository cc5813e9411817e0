"""When has a revision reached the proxies? (the rule behind `shoal apply --wait`)"""

from __future__ import annotations

from typing import Any

from shoal.cli.rollout import rollout


def _proxy(workload: str, sync: str = "SYNCED", nack: str | None = None,
           connected: bool = True) -> dict[str, Any]:
    types = [{"type": "LDS", "nack": {"message": nack}}] if nack else [{"type": "LDS"}]
    return {"node_id": f"{workload}.default", "workload": workload, "sync": sync,
            "connected": connected, "types": types, "ready": True}


def test_done_only_once_pushed_and_every_proxy_synced() -> None:
    state = {"revision": 7, "pushedRevision": 6, "proxies": [_proxy("a"), _proxy("b")]}
    r = rollout(state, 7)
    assert not r.done and not r.pushed and "not pushed" in r.describe()
    state["pushedRevision"] = 7
    assert rollout(state, 7).done
    state["proxies"][1]["sync"] = "STALE"
    r = rollout(state, 7)
    assert not r.done and r.behind == ("b.default",)


def test_named_workloads_must_be_connected_and_others_do_not_count() -> None:
    state = {"revision": 3, "pushedRevision": 3,
             "proxies": [_proxy("a"), _proxy("old", connected=False, sync="STALE"),
                         _proxy("other", sync="STALE")]}
    assert rollout(state, 3, {"a"}).done
    r = rollout(state, 3, {"a", "old"})
    assert not r.done and r.missing == ("old",)
    assert not rollout(state, 3).done  # everyone: "other" is behind
    assert rollout(state, 3).behind == ("other.default",)


def test_a_nack_is_reported_with_its_message() -> None:
    state = {"revision": 2, "pushedRevision": 2,
             "proxies": [_proxy("a", sync="NACKED", nack="cannot bind 127.0.0.1:99")]}
    r = rollout(state, 2)
    assert not r.done
    assert r.nacked == ("a.default: LDS: cannot bind 127.0.0.1:99",)


def test_a_named_workload_counts_once_registered_and_ready() -> None:
    unregistered = {**_proxy("a"), "ready": None}  # connected before its agent registered
    state = {"revision": 3, "pushedRevision": 3, "proxies": [unregistered]}
    assert rollout(state, 3, {"a"}).missing == ("a",)
    state["proxies"] = [{**_proxy("a"), "ready": False}]  # registered, sidecar not ready
    assert rollout(state, 3, {"a"}).missing == ("a",)
    state["proxies"] = [_proxy("a")]
    assert rollout(state, 3, {"a"}).done
