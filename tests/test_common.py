"""The shared primitives: the retry rule and the log-once rule every writer uses."""

from __future__ import annotations

import logging

import pytest

from common.logonce import WarnOnce
from common.retry import RETRY_AFTER_FLOOR, Backoff


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff(base=1.0, cap=8.0, spread=(1.0, 1.0))
    assert [backoff.failed() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.succeeded() is True
    assert backoff.succeeded() is False
    assert backoff.failed() == 1.0


def test_backoff_honours_retry_after_within_floor_and_cap() -> None:
    backoff = Backoff(base=1.0, cap=30.0)
    assert backoff.failed("0") == RETRY_AFTER_FLOOR
    assert 20.0 <= backoff.failed("20") <= 25.0
    assert backoff.failed("86400") == 30.0


def test_warn_once_warns_at_the_start_debugs_repeats_and_infos_the_recovery(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="t")
    state = WarnOnce(logging.getLogger("t"))
    assert state.recovered("fine") is False
    assert state.trouble("down %s", 1) is True
    assert state.trouble("down %s", 2) is False
    assert state.recovered("up") is True
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "down 1"), ("DEBUG", "down 2"), ("INFO", "up")]


def test_warn_once_with_every_warns_again_with_the_count_held_back(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    state = WarnOnce(logging.getLogger("t2"), every=60, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="t2")
    state.trouble("bad")
    now[0] = 30
    state.trouble("bad")
    state.trouble("bad")
    now[0] = 61
    assert state.trouble("bad") is True
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["bad", "bad (2 more since the last warning)"]
