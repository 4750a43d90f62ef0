"""`patrol notify ...`: the routing tree explained for one NC, so an operator can see where
an alert would go (and whether it would be muted) before the plant room finds out.

The commands' options and text live here; agent/cli.py loads the site and prints. Pure
pydantic and the standard library: the agent's CLI may import it (tests/test_layout.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from api.notify.config import MATCH_KEYS, NOTIFY_EVENTS, NotifyConfig, Route, TimeInterval
from api.notify.intervals import muted
from api.notify.routing import group_key, routes_for
from common.config_types import format_duration
from common.vocabulary import CATEGORIES, SEVERITIES

CHOICES: dict[str, tuple[str, ...]] = {"severity": SEVERITIES, "category": CATEGORIES}
DEFAULT_EVENTS = ("raised",)


def add_routes_arguments(parser: argparse.ArgumentParser) -> None:
    """The NC's fields, its event and the instant, as `patrol notify routes` takes them."""
    for key in MATCH_KEYS:
        choices = CHOICES.get(key)
        more = (f": {', '.join(choices)}" if choices
                else " (default: this site's id)" if key == "site_id" else "")
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar=key.upper(),
                            choices=choices, help=f"the NC's {key}{more}")
    parser.add_argument("--event", action="append", choices=NOTIFY_EVENTS, metavar="EVENT",
                        help="the change to route (default: raised); repeatable, in "
                        "preference order: --event recurring --event raised for a new "
                        f"recurring NC. One of {', '.join(NOTIFY_EVENTS)}")
    parser.add_argument("--at", type=datetime.fromisoformat, metavar="TIME",
                        help="judge mutes at this ISO 8601 time (site timezone unless it "
                        "names an offset; default: now)")


def fields_from(args: argparse.Namespace, site_id: str) -> dict[str, str | None]:
    """The NC fields given on the command line (None for the rest, but the site's id)."""
    fields = {key: getattr(args, key) for key in MATCH_KEYS}
    return {**fields, "site_id": fields["site_id"] or site_id}


def describe_routes(config: NotifyConfig | None, fields: Mapping[str, str | None],
                    events: Sequence[str], at: datetime, timezone: str) -> list[str]:
    """Lines saying which routes and channels an NC with `fields` reaches for `events`,
    grouped how, reminded and escalated when, and whether a mute holds at `at`."""
    given = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None) or "no fields"
    unset = [k for k, v in fields.items() if v is None]
    lines = [f"NC: {given}" + (f" (unset: {', '.join(unset)})" if unset else ""),
             f"event: {', '.join(events)}; at {at.astimezone(ZoneInfo(timezone)):%Y-%m-%d %H:%M}"
             f" {timezone}"]
    if config is None:
        return [*lines, "no notify: section: no NC notifies anyone"]
    hits = routes_for(config, fields, events)
    if not hits:
        return [*lines, "no route takes it: this NC notifies nobody"]
    intervals = {i.name: i for i in config.time_intervals}
    for hit in hits:
        route = hit.route
        lines += [f"notify.routes[{hit.index}]: match {_match(route)}, events "
                  f"{', '.join(route.events) or 'all'} -> {hit.event}",
                  f"  channels: {', '.join(hit.channels)}",
                  f"  group: {group_key(route, fields) or '(one group)'} (group_by "
                  f"{', '.join(route.group_by) or 'nothing'}); first message after "
                  f"{_d(route.group_wait)}, later ones after {_d(route.group_interval)}",
                  f"  {_timers(route)}",
                  f"  {_mute(route, intervals, at, timezone, fields.get('severity'))}"]
        if route.continue_:
            lines.append("  continue: later routes are tried too")
    return lines


def resolve_at(at: datetime | None, timezone: str) -> datetime:
    """`--at` as an aware time: naive means the site's wall clock; None means now."""
    if at is None:
        return datetime.now(ZoneInfo(timezone))
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(timezone))


def _match(route: Route) -> str:
    return "{" + ", ".join(f"{k}: [{', '.join(v)}]" for k, v in route.match.items()) + "}"


def _timers(route: Route) -> str:
    parts = [f"remind every {_d(route.repeat_interval)} while not acknowledged"
             if route.repeat_interval else "no reminders"]
    if route.escalate_after:
        parts.append(f"escalate after {_d(route.escalate_after)} to "
                     f"{', '.join(route.escalate_to)}")
    if route.ack_timeout:
        parts.append(f"again {_d(route.ack_timeout)} after acknowledgement if not rectified")
    return "; ".join(parts)


def _mute(route: Route, intervals: Mapping[str, TimeInterval], at: datetime, timezone: str,
          severity: str | None) -> str:
    if not route.mute_time_intervals and not route.active_time_intervals:
        return "mutes: none"
    if severity is not None and severity in route.mute_bypass:
        return f"not muted: {severity} bypasses mutes"
    reason = muted(route, intervals, at, timezone, severity)
    return f"muted now: {reason}" if reason else "not muted now"


def _d(seconds: float | None) -> str:
    return format_duration(seconds) if seconds else "0s"
