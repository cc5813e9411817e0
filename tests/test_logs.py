"""shoal's log handler follows sys.stderr and never raises into the code that logs."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from shoal.logs import configure_logging


def test_logging_follows_stderr_and_survives_a_closed_one(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO", json_lines=True)
    log = logging.getLogger("shoal.test")
    log.info("one")
    first.close()  # e.g. the stream of an in-process CLI run that has ended
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.info("two")
    assert '"msg": "two"' in second.getvalue() or "two" in second.getvalue()
    second.close()
    log.info("three")  # stderr itself closed: dropped, not an exception in the caller
