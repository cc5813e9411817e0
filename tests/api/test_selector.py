"""Label selectors as text (`shoal get -l`, the API's labelSelector)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.api.selector import LabelSelector
from shoal.errors import ValidationError

LABELS = {"app": "reviews", "version": "v2", "shoal.io/tier": "backend"}


@pytest.mark.parametrize(("text", "matches"), [
    ("", True),
    ("app=reviews", True),
    ("app==reviews", True),
    ("app=ratings", False),
    ("app!=ratings", True),
    ("app=reviews,version=v2", True),
    ("app=reviews, version=v1", False),
    ("version", True),
    ("!version", False),
    ("!canary", True),
    ("shoal.io/tier=backend", True),
    ("canary!=true", True),  # a missing label is not equal to anything
])
def test_selector_semantics(text: str, matches: bool) -> None:
    assert LabelSelector.parse(text).matches(LABELS) is matches


@pytest.mark.parametrize(("text", "says"), [
    ("app in (reviews)", "set-based"),
    ("app notin (a,b)", "set-based"),
    ("=reviews", "is not a label key"),
    ("app=re views", "is not a label value"),
    ("app=" + "x" * 64, "is not a label value"),
    ("a" * 2000, "longer than"),
])
def test_bad_selectors_are_refused_by_name(text: str, says: str) -> None:
    with pytest.raises(ValidationError) as e:
        LabelSelector.parse(text)
    assert says in str(e.value)


@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_validation_error(text: str) -> None:
    try:
        selector = LabelSelector.parse(text)
    except ValidationError:
        return
    selector.matches(LABELS)  # never raises
