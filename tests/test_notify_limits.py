"""The channels' rate limits (api.notify.limits), on a clock the test drives."""

from __future__ import annotations

import pytest

from api.notify.config import Channel
from api.notify.limits import MARGIN, Buckets


def chat(tool: str, name: str = "c") -> Channel:
    return Channel(name=name, kind="webhook", format=tool, url_env="UNUSED")


def drain(buckets: Buckets, channel: Channel, severity: str, now: float) -> int:
    """How many notices of `severity` may go at `now`, each one counted."""
    sent = 0
    while buckets.wait_time(channel, severity, now) == 0.0:
        sent += 1
        assert sent < 1000
    return sent


def most_in_any_window(times: list[float], length: float) -> int:
    return max((sum(1 for t in times if start <= t < start + length) for start in times),
               default=0)


@pytest.mark.parametrize("tool", ["dingtalk", "wecom"])
def test_twenty_a_minute_with_five_kept_for_critical(tool: str) -> None:
    buckets, channel = Buckets(), chat(tool)
    assert drain(buckets, channel, "minor", 0.0) == 15  # the last quarter is not theirs
    assert drain(buckets, channel, "critical", 0.0) == 5
    assert buckets.wait_time(channel, "critical", 10.0) == pytest.approx(60 * MARGIN - 10)
    assert buckets.wait_time(channel, "critical", 60 * MARGIN) == 0.0


def test_a_wait_is_not_a_send() -> None:
    buckets, channel = Buckets(), chat("dingtalk")
    drain(buckets, channel, "critical", 0.0)
    waits = [buckets.wait_time(channel, "critical", 1.0) for _ in range(3)]
    assert waits == [pytest.approx(60 * MARGIN - 1.0)] * 3


def test_minor_waits_for_room_below_the_reserve() -> None:
    buckets, channel = Buckets(), chat("dingtalk")
    for second in range(16):  # one a second: the 16th finds 15 in the window
        assert buckets.wait_time(channel, "minor", float(second)) == (
            0.0 if second < 15 else pytest.approx(60 * MARGIN - 15.0))
    assert buckets.wait_time(channel, "critical", 15.0) == 0.0


@pytest.mark.parametrize("tool, windows", [
    ("dingtalk", [(20, 60.0)]), ("wecom", [(20, 60.0)]),
    ("feishu", [(5, 1.0), (100, 60.0)]), ("slack", [(1, 1.0)])])
@pytest.mark.parametrize("severity", ["critical", "minor"])
def test_sending_whenever_allowed_never_exceeds_the_tool(tool: str, severity: str,
                                                         windows: list[tuple[int, float]]
                                                         ) -> None:
    """Ask every 50 ms for 10 minutes, send whenever allowed: no window of the tool's
    length ever holds more than the tool allows (a refilling token bucket would let
    nearly twice as many through its first window)."""
    buckets, channel = Buckets(), chat(tool)
    sent = [tick * 0.05 for tick in range(12000)
            if buckets.wait_time(channel, severity, tick * 0.05) == 0.0]
    for count, length in windows:
        assert most_in_any_window(sent, length) <= count
    busiest = max(most_in_any_window(sent, length) / count for count, length in windows)
    assert busiest >= (1.0 if severity == "critical" or tool == "slack" else 0.7)


def test_the_wait_given_is_the_wait_needed() -> None:
    buckets, channel = Buckets(), chat("feishu")
    now = 0.0
    for _ in range(300):
        wait = buckets.wait_time(channel, "critical", now)
        if wait:
            assert buckets.wait_time(channel, "critical", now + wait * 0.99) > 0.0
            now += wait
            assert buckets.wait_time(channel, "critical", now) == 0.0


def test_slack_keeps_no_reserve_in_one_a_second() -> None:
    buckets, channel = Buckets(), chat("slack")
    assert buckets.wait_time(channel, "minor", 0.0) == 0.0
    assert buckets.wait_time(channel, "critical", 0.5) == pytest.approx(MARGIN - 0.5)
    assert buckets.wait_time(channel, "minor", MARGIN) == 0.0


@pytest.mark.parametrize("channel", [
    chat("generic"),
    Channel(name="m", kind="email", smtp="smtp://mail:25", from_="a@b.c", to=["d@e.f"]),
    Channel(name="q", kind="mqtt", topic="plant/alerts")])
def test_generic_email_and_mqtt_are_not_limited_here(channel: Channel) -> None:
    buckets = Buckets()
    assert all(buckets.wait_time(channel, "minor", 0.0) == 0.0 for _ in range(500))


def test_channels_have_their_own_windows_and_a_new_format_new_ones() -> None:
    buckets = Buckets()
    drain(buckets, chat("dingtalk", "a"), "critical", 0.0)
    assert buckets.wait_time(chat("dingtalk", "b"), "critical", 0.0) == 0.0
    assert buckets.wait_time(chat("dingtalk", "a"), "critical", 0.0) > 0.0
    assert buckets.wait_time(chat("wecom", "a"), "critical", 0.0) == 0.0  # reloaded


def test_a_clock_gone_back_lets_nothing_more_through() -> None:
    buckets, channel = Buckets(), chat("dingtalk")
    drain(buckets, channel, "critical", 100.0)
    assert buckets.wait_time(channel, "critical", 50.0) > 0.0
    assert buckets.wait_time(channel, "critical", 100.0 + 60 * MARGIN) == 0.0
