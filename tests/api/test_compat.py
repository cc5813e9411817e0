"""docs/istio-compatibility.md is generated from the models and must stay equal to them."""

from __future__ import annotations

from pathlib import Path

from shoal.api.compat import fields, render
from shoal.security.model import AuthorizationPolicySpec

PAGE = Path(__file__).resolve().parents[2] / "docs" / "istio-compatibility.md"


def test_the_page_is_current() -> None:
    assert PAGE.read_text() == render(), (
        "regenerate: python -m shoal.api.compat > docs/istio-compatibility.md")


def test_refused_fields_are_marked() -> None:
    status = {path: ok for path, ok, _ in fields(AuthorizationPolicySpec)}
    assert status["provider"] and status["rules.from.source.principals"]
    assert status["targetRef"] is False
