"""How fast each channel may send: its tool's published rates, kept over sliding windows.

    dingtalk  20 a minute (more, and the robot is throttled for 10 minutes)
    wecom     20 a minute
    feishu    5 a second and 100 a minute
    slack     1 a second
    generic, email, mqtt: no limit here (the receiver's own; `limits.max_per_10m` still
              merges a flood into a digest)

Each rate is a window of its length holding the times of the messages sent in it (a
sliding log), not a refilling token bucket: a full bucket of 20 that refills at 20 a
minute lets about 39 through in the first minute, and DingTalk throttles a robot for 10
minutes after its 21st. Windows are 5% longer than the tool's, for the time a message
takes to reach it. The last quarter of each window (rounded down, so 1 a second keeps
none) is for critical notices: a burst of minor ones cannot make a critical one wait.
Pure: the caller passes the clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from api.notify.config import Channel

HEADROOM = 0.25
"""The share of each window only critical notices may take."""

MARGIN = 1.05
"""Windows are this much longer than the tool's: a message reaches it a little later."""


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    per: float
    """seconds"""


RATES: dict[str, tuple[Rate, ...]] = {
    "dingtalk": (Rate(20, 60.0),),
    "wecom": (Rate(20, 60.0),),
    "feishu": (Rate(5, 1.0), Rate(100, 60.0)),
    "slack": (Rate(1, 1.0),),
}


def rates(channel: Channel) -> tuple[Rate, ...]:
    """The limits a channel's tool sets (none for generic webhooks, email and MQTT)."""
    return RATES.get(channel.format, ()) if channel.kind == "webhook" else ()


class Window:
    """The sends of the last `per` (x MARGIN) seconds, at most `count` of them."""

    def __init__(self, rate: Rate) -> None:
        self.count = rate.count
        self.length = rate.per * MARGIN
        self.reserve = math.floor(rate.count * HEADROOM)
        self.sent: deque[float] = deque()

    def wait(self, critical: bool, now: float) -> float:
        """Seconds until one more may be sent (0: now)."""
        while self.sent and self.sent[0] <= now - self.length:
            self.sent.popleft()
        allowed = self.count - (0 if critical else self.reserve)
        if len(self.sent) < allowed:
            return 0.0
        # the send whose leaving the window makes room
        return max(0.0, self.sent[len(self.sent) - allowed] + self.length - now)


class Buckets:
    """Every channel's windows (its "buckets"), made at the channel's first message."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[str, list[Window]]] = {}

    def wait_time(self, channel: Channel, severity: str, now: float) -> float:
        """0 when `channel` may send a notice of `severity` now (and the send is counted),
        else the seconds to wait (nothing counted)."""
        limits = rates(channel)
        if not limits:
            return 0.0
        known = self._windows.get(channel.name)
        if known is None or known[0] != channel.format:  # new, or another tool on reload
            known = (channel.format, [Window(rate) for rate in limits])
            self._windows[channel.name] = known
        windows = known[1]
        wait = max(window.wait(severity == "critical", now) for window in windows)
        if wait == 0.0:
            for window in windows:
                # a clock gone back must not put this send before earlier ones
                window.sent.append(max(now, window.sent[-1]) if window.sent else now)
        return wait
