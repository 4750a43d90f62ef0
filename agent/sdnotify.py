"""systemd's notify protocol and watchdog, with the standard library alone.

Under `Type=notify` systemd counts a service started when it says `READY=1`, and with
`WatchdogSec=` it kills and restarts one that has not said `WATCHDOG=1` for that long. The
protocol is one datagram to the AF_UNIX socket named in `$NOTIFY_SOCKET` (a leading `@`
is the abstract namespace), so no python-systemd: the agent stays small. Outside systemd
(`NOTIFY_SOCKET` unset) every call here does nothing.

A ping proves only what the code that sends it checked. `watchdog` runs on the agent's
event loop, so a loop blocked by a stalled disk write sends nothing; and it pings only
while every watched part (`Watched`: the pipeline, each collector) says it is making
progress. A part decides what progress means for itself: a source that is merely silent
while its loop still runs is not stalled; a poll cycle stuck past every timeout it could
honestly wait, or readings queued that the pipeline has not taken, is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from common.logonce import WarnOnce

log = logging.getLogger("patrol.systemd")


@runtime_checkable
class Watched(Protocol):
    """A part of the agent whose own progress the watchdog asks about before each ping."""

    def stalled(self, now: float, limit: float) -> str:
        """Why this part has made no progress for more than `limit` seconds (`now` from
        time.monotonic), or "" while it does."""
        ...


def _address(environ: Mapping[str, str]) -> str | None:
    path = environ.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None  # unset, or a kind we do not speak (vsock): nobody is listening for us


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `fields` ("READY=1", "STATUS=...") in one datagram; False when not under
    systemd or the send failed (logged at debug: a missed notification must not stop
    the agent, and systemd's own timeouts report it)."""
    address = _address(os.environ if environ is None else environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", address, exc)
        return False
    return True


def ready(status: str, environ: Mapping[str, str] | None = None) -> bool:
    """Started: systemd's start job ends here (dependent units start, `systemctl start`
    returns)."""
    return notify("READY=1", f"STATUS={status}", environ=environ)


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    """Stopping on purpose: systemd waits for the exit instead of counting a failure."""
    return notify("STOPPING=1", "STATUS=stopping", environ=environ)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """`WatchdogSec=` in seconds, when systemd asked this process for pings; None
    otherwise (no WATCHDOG_USEC, or WATCHDOG_PID names another process: a child that
    inherited the variables must not ping for its parent)."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 and _address(env) is not None else None


async def watchdog(parts: Sequence[Watched], interval: float, *,
                   environ: Mapping[str, str] | None = None,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Ping every `interval / 2` seconds while every part makes progress; runs until
    cancelled.

    A part counts as stalled when it has shown no progress for `interval` seconds, so a
    hang ends in a restart within about 2.5 x `interval`. While one is stalled the pings
    stop and STATUS says which part, for `systemctl status`.
    """
    outage = WarnOnce(log, level=logging.ERROR, every=interval)
    while True:
        now = clock()
        reasons = [why for part in parts if (why := part.stalled(now, interval))]
        if reasons:
            why = "; ".join(reasons)
            outage.trouble("watchdog: not pinging systemd, which restarts patrol %.0fs "
                           "after the last ping: %s", interval, why)
            notify(f"STATUS=stalled: {why}", environ=environ)
        else:
            if outage.recovered("watchdog: progress again, pinging systemd"):
                notify("STATUS=running", environ=environ)
            notify("WATCHDOG=1", environ=environ)
        await asyncio.sleep(interval / 2)


def watchdog_tasks(parts: Sequence[object]) -> list[asyncio.Task[None]]:
    """The watchdog as a task when systemd asked for one (else none); each part that
    implements `Watched` is asked about its progress."""
    interval = watchdog_interval()
    if interval is None:
        return []
    watched = [part for part in parts if isinstance(part, Watched)]
    log.info("systemd watchdog: pinging every %.1fs while the loop and %d parts make "
             "progress", interval / 2, len(watched))
    return [asyncio.create_task(watchdog(watched, interval), name="watchdog")]
