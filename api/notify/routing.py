"""The routing tree of SPEC 7.2: which routes, and so which channels, an NC change reaches;
and the lint of `patrol check` for what is legal but probably not meant.

Pure: no I/O, no clock. Routes are tried in order; the first that matches the NC and
accepts the event wins, unless it says `continue: true`. The same `matches` decides
silences and inhibit rules, so "matches" means one thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from api.notify.config import MATCH_KEYS, NOTIFY_EVENTS, NotifyConfig, Route, TimeInterval
from common.config_types import format_duration
from common.vocabulary import CATEGORIES, SEVERITIES

CLOSED_KEYS: dict[str, tuple[str, ...]] = {"severity": SEVERITIES, "category": CATEGORIES}
"""Match keys whose every value is known: listing them all is the same as leaving the key
out. Other keys (site_id, department...) can always take a value no route names."""


def matches(match: Mapping[str, Sequence[str]], fields: Mapping[str, object]) -> bool:
    """Every key's field is among its wanted values; a missing or None field matches
    nothing (a route on `department` does not catch NCs without one)."""
    for key, wanted in match.items():
        value = fields.get(key)
        if value is None or str(value) not in wanted:
            return False
    return True


def fields_of(nc: Mapping[str, Any]) -> dict[str, str | None]:
    """The match fields of an NC's public JSON (SPEC 5, with asset_type, standard_kind)."""
    return {key: None if nc.get(key) is None else str(nc[key]) for key in MATCH_KEYS}


@dataclass(frozen=True, slots=True)
class Hit:
    """A route an NC change reached: where it is in `notify.routes`, and for which event."""

    index: int
    route: Route
    channels: tuple[str, ...]
    event: str


def accepts(route: Route, events: Sequence[str]) -> str | None:
    """The first of `events` (in preference order) the route takes, or None."""
    return next((e for e in events if not route.events or e in route.events), None)


def routes_for(config: NotifyConfig, fields: Mapping[str, object],
               events: Sequence[str]) -> list[Hit]:
    """The routes an NC with `fields` reaches for one change. `events` is in preference
    order: a new recurring NC is ("recurring", "raised"), and each route takes the first
    it accepts, once. Unknown event names are a bug of the caller: ValueError."""
    unknown = [e for e in events if e not in NOTIFY_EVENTS]
    if unknown or not events:
        raise ValueError(f"events {unknown or '()'} are not among {', '.join(NOTIFY_EVENTS)}")
    hits: list[Hit] = []
    for index, route in enumerate(config.routes):
        event = accepts(route, events) if matches(route.match, fields) else None
        if event is None:
            continue
        hits.append(Hit(index, route, tuple(route.channels), event))
        if not route.continue_:
            break
    return hits


def group_key(route: Route, fields: Mapping[str, object]) -> str:
    """The route's group_by values as stable text, keys sorted: `department=engineering|
    site_id=tower-a`; None is empty, and `|` or `\\` in a value is escaped."""
    parts = []
    for key in sorted(set(route.group_by)):
        value = fields.get(key)
        text = "" if value is None else str(value)
        parts.append(f"{key}=" + text.replace("\\", "\\\\").replace("|", "\\|"))
    return "|".join(parts)


# --- lint ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LintWarning:
    """Legal but probably not meant; `loc` is the site.yaml key it is about."""

    loc: tuple[str | int, ...]
    message: str

    @property
    def key(self) -> str:
        """`notify.routes[1]`, as config errors name keys."""
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.loc)[1:]

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def lint(config: NotifyConfig) -> list[LintWarning]:
    """What `patrol check` warns of in `notify:`: routes, inhibit rules, channels, and
    NCs no route takes."""
    warnings: list[LintWarning] = []
    for index, route in enumerate(config.routes):
        warnings += [LintWarning(("notify", "routes", index), text)
                     for text in _route_warnings(config, index, route)]
    for index, rule in enumerate(config.inhibit):
        if not rule.equal:
            warnings.append(LintWarning(("notify", "inhibit", index), (
                "no `equal`: while any NC matching source is open, every NC matching target "
                "is held back, on every asset and site (add e.g. equal: [asset_id])")))
    used = {name for route in config.routes for name in (*route.channels, *route.escalate_to)}
    if not config.routes:
        warnings.append(LintWarning(("notify", "routes"), "no routes: no NC notifies anyone"))
    else:
        warnings += [LintWarning(("notify", "channels", index),
                                 f"channel {channel.name!r} is used by no route "
                                 "(channels or escalate_to)")
                     for index, channel in enumerate(config.channels)
                     if channel.name not in used]
        gap = _uncovered(config.routes)
        if gap:
            warnings.append(LintWarning(("notify", "routes"), gap))
    return warnings


def _route_warnings(config: NotifyConfig, index: int, route: Route) -> list[str]:
    out = []
    for earlier, before in enumerate(config.routes[:index]):
        if not before.continue_ and _covers(before, route):
            why = ("matches every NC and event and does not continue" if _catch_all(before)
                   else "matches every NC and event this route does, and does not continue")
            out.append(f"never reached: notify.routes[{earlier}] before it {why}")
            break
    if route.group_wait > route.group_interval:
        out.append(f"group_wait ({_d(route.group_wait)}) is longer than group_interval "
                   f"({_d(route.group_interval)}): a group's first message waits longer "
                   "than its later ones")
    if route.repeat_interval is not None and route.repeat_interval < route.group_interval:
        out.append(f"repeat_interval ({_d(route.repeat_interval)}) is shorter than "
                   f"group_interval ({_d(route.group_interval)}): reminders go out with the "
                   "group's messages, at most once per group_interval")
    always = [name for name in route.mute_time_intervals
              if not (interval := _interval(config, name)).times and not interval.weekdays]
    if always:
        out.append(f"time interval {always[0]!r} has neither times nor weekdays, so it holds "
                   "always: this route is muted for good (but for mute_bypass)")
    return out


def _interval(config: NotifyConfig, name: str) -> TimeInterval:
    return next(i for i in config.time_intervals if i.name == name)


def _d(seconds: float) -> str:
    return format_duration(seconds) if seconds else "0s"


def _wanted(route: Route) -> dict[str, frozenset[str]]:
    """The route's match with keys listing every value of a closed vocabulary left out."""
    return {key: frozenset(values) for key, values in route.match.items()
            if not (key in CLOSED_KEYS and set(CLOSED_KEYS[key]) <= set(values))}


def _events(route: Route) -> frozenset[str]:
    return frozenset(route.events or NOTIFY_EVENTS)


def _catch_all(route: Route) -> bool:
    return not _wanted(route) and _events(route) == frozenset(NOTIFY_EVENTS)


def _covers(before: Route, route: Route) -> bool:
    """Every (NC, event) `route` takes, `before` takes too."""
    mine, theirs = _wanted(route), _wanted(before)
    return (all(key in mine and mine[key] <= wanted for key, wanted in theirs.items())
            and _events(route) <= _events(before))


def _uncovered(routes: Sequence[Route]) -> str | None:
    """Which NCs reach no route, over every severity, category and event, for an NC whose
    open fields (site_id, department...) no route names. None: every NC is heard of."""
    catchers = [r for r in routes if set(_wanted(r)) <= set(CLOSED_KEYS)]
    named = sorted({key for r in routes for key in _wanted(r)} - set(CLOSED_KEYS),
                   key=MATCH_KEYS.index)
    gaps = [(s, c, e) for s, c, e in product(SEVERITIES, CATEGORIES, NOTIFY_EVENTS)
            if not any(_takes(r, s, c, e) for r in catchers)]
    if not gaps:
        return None
    orders = (SEVERITIES, CATEGORIES, NOTIFY_EVENTS)
    dims = [sorted({g[i] for g in gaps}, key=order.index) for i, order in enumerate(orders)]
    which = "; ".join(_say(name, values, every) for name, values, every in
                      zip(("severity", "category", "event"), dims, orders, strict=True))
    if len(gaps) < len(dims[0]) * len(dims[1]) * len(dims[2]):
        which = f"some of: {which}"
    unless = f", unless their {' or '.join(named)} matches a route" if named else ""
    return (f"no catch-all route: NCs reach no channel for {which}{unless} (end the routes "
            "with `- match: {}` to hear of every NC)")


def _takes(route: Route, severity: str, category: str, event: str) -> bool:
    wanted = _wanted(route)
    return (severity in wanted.get("severity", {severity})
            and category in wanted.get("category", {category}) and event in _events(route))


def _say(name: str, values: list[str], every: tuple[str, ...]) -> str:
    return f"any {name}" if len(values) == len(every) else f"{name} {', '.join(values)}"
