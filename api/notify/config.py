"""site.yaml `notify:` (SPEC 7.2): channels, routes, time intervals, inhibition, limits.

pydantic only. What is wrong in itself (an unknown match key, a route naming a channel
that does not exist, a time like 25:00) is a config error with its line; what is legal but
probably not meant (a shadowed route, group_wait longer than group_interval) is a lint
warning of `patrol check` (api.notify.routing.lint).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from common.config_types import ConfigPath, Duration
from common.secrets import read_secret
from common.vocabulary import Severity

MatchKey = Literal["site_id", "asset_id", "asset_type", "standard_id", "standard_kind",
                   "severity", "department", "category"]
"""NC fields a route, a silence or an inhibit rule may match on (SPEC 7.2)."""
MATCH_KEYS: tuple[MatchKey, ...] = get_args(MatchKey)

NotifyEvent = Literal["raised", "occurrence", "assigned", "rectified", "reopened",
                      "recurring", "overdue", "due_soon", "escalated", "closed", "cancelled",
                      "chattering"]
"""What a route's `events` may name: the NC changes that raise a notification (SPEC 7.2)."""
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)

TimerKind = Literal["reminder", "ack_timeout"]
"""Notifications no NC change raises, but time: still not acknowledged (`repeat_interval`),
acknowledged but not rectified (`ack_timeout`). `due_soon` and `escalated` are events."""

Format = Literal["generic", "dingtalk", "wecom", "feishu", "slack"]
Locale = Literal["en", "zh-CN"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_RANGE = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _match(value: dict[str, str | list[str]]) -> dict[str, tuple[str, ...]]:
    """A match as {key: (values...)}: a value or a list, keys among MATCH_KEYS."""
    out: dict[str, tuple[str, ...]] = {}
    for key, wanted in value.items():
        if key not in MATCH_KEYS:
            raise ValueError(f"{key!r} is not one of {', '.join(MATCH_KEYS)}")
        values = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        if not values:
            raise ValueError(f"{key}: an empty list matches nothing; leave the key out to "
                             "match every value")
        out[key] = values
    return out


Match = Annotated[dict[str, str | list[str]], AfterValidator(_match)]
"""{NC field: value or [values]}; every key given must match (SPEC 7.2). An empty match
matches every NC."""


class Mention(_Strict):
    """Who a chat message @mentions (DingTalk `at`, WeCom `mentioned_mobile_list`)."""

    mobiles: list[str] = Field(default_factory=list)
    user_ids: list[str] = Field(default_factory=list)
    all: bool = False


class Channel(_Strict):
    """Where notifications go. Secrets (a chat robot's URL carries its key) come from env
    or files, never from the file itself."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: Literal["webhook", "email", "mqtt"]
    format: Format = Field("generic", description="webhook: the chat tool's message shape")
    url: str | None = Field(None, description="webhook: a URL without a key in it")
    url_env: str | None = Field(None, description="webhook: the URL from this variable")
    url_file: ConfigPath | None = Field(None, description="webhook: the URL from this file")
    secret_env: str | None = Field(None, description="dingtalk, feishu: signing secret")
    secret_file: ConfigPath | None = None
    mention: Mention = Field(default_factory=Mention)
    msgtype: Literal["markdown", "text"] = Field("markdown", description="wecom")
    smtp: str | None = Field(None, description="email: smtp://host:port (STARTTLS) or "
                             "smtps://host:port (implicit TLS)")
    starttls: bool | None = Field(None, description="email, smtp://: require STARTTLS "
                                  "(default: required unless the host is this machine)")
    ca_file: ConfigPath | None = Field(None, description="email: CA bundle for the server")
    username: str | None = None
    password_env: str | None = None
    password_file: ConfigPath | None = None
    from_: str | None = Field(None, alias="from")
    to: list[str] = Field(default_factory=list)
    topic: str | None = Field(None, description="mqtt: where the JSON goes")
    qos: Literal[0, 1] = 1
    retain: bool = False
    locale: Locale | None = Field(None, description="this channel's language (default: "
                                  "site.locale)")

    @model_validator(mode="after")
    def _complete(self) -> Channel:
        if self.kind == "webhook":
            given = [k for k in ("url", "url_env", "url_file") if getattr(self, k)]
            if len(given) != 1:
                raise ValueError("a webhook channel needs exactly one of url, url_env, "
                                 "url_file")
            if self.url is not None and not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url {self.url!r} is not http(s)")
            if self.url is not None and self.format in ("dingtalk", "wecom", "feishu",
                                                        "slack"):
                raise ValueError(f"a {self.format} URL carries the robot's key: give it "
                                 "with url_env or url_file, never in site.yaml")
        elif self.kind == "email":
            if not self.smtp or not self.smtp.startswith(("smtp://", "smtps://")):
                raise ValueError("an email channel needs smtp: smtp://host:port or "
                                 "smtps://host:port")
            if not self.from_ or not self.to:
                raise ValueError("an email channel needs from and to")
        elif not self.topic:
            raise ValueError("an mqtt channel needs topic")
        return self

    def target(self) -> str | None:
        """The webhook URL, read now (SecretError names what could not be read)."""
        return self.url or read_secret(self.url_env, _path(self.url_file))

    def secret(self) -> str | None:
        return read_secret(self.secret_env, _path(self.secret_file))

    def password(self) -> str | None:
        return read_secret(self.password_env, _path(self.password_file))


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def _time_range(value: str) -> str:
    found = _TIME_RANGE.match(value)
    if not found or int(found[1]) * 60 + int(found[2]) > 1440 \
            or int(found[3]) * 60 + int(found[4]) > 1440:
        raise ValueError(f"{value!r} is not a time range like 22:00-07:00")
    return value


def _weekdays(value: str) -> str:
    first, _, last = value.lower().partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        raise ValueError(f"{value!r} is not a weekday or range like mon-fri")
    return value.lower()


class TimeInterval(_Strict):
    """A named, recurring stretch of time in the site's time zone (or `location`): all
    given lists must hold; an empty list holds always. `22:00-07:00` crosses midnight."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    times: list[Annotated[str, AfterValidator(_time_range)]] = Field(default_factory=list)
    weekdays: list[Annotated[str, AfterValidator(_weekdays)]] = Field(default_factory=list)
    location: str | None = Field(None, description="IANA zone (default: site.timezone)")

    @field_validator("location")
    @classmethod
    def _zone(cls, name: str | None) -> str | None:
        """A zone the notifier could not load would stop it at the first message."""
        try:
            if name is not None:
                ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # 'Asia' is a directory
            raise ValueError(f"{name!r} is not an IANA time zone like Asia/Shanghai") from None
        return name


class InhibitRule(_Strict):
    """While an NC matching `source` is open, notifications of NCs matching `target` with
    the same values of `equal` are not sent (recorded as suppressed)."""

    source: Match
    target: Match = Field(default_factory=dict)
    equal: list[MatchKey] = Field(default_factory=list)


DEFAULT_INHIBIT = (InhibitRule(source={"standard_kind": "stale"}, target={},
                               equal=["asset_id"]),
                   InhibitRule(source={"standard_kind": "gateway_offline"},
                               target={"standard_kind": "stale"}, equal=["site_id"]))
"""A silent sensor or device says why the asset's other standards have no data or look
wrong: its NC alone is worth hearing of. An offline gateway says why its site's sensors
look silent (api.gateways)."""


class Route(_Strict):
    """Which NCs (`match`, `events`) go to which channels, and how often."""

    match: Match = Field(default_factory=dict)
    events: list[NotifyEvent] = Field(default_factory=list, description="default: all")
    channels: list[str] = Field(min_length=1)
    continue_: bool = Field(False, alias="continue", description="go on to later routes "
                            "after this one matched")
    group_by: list[MatchKey] = Field(default_factory=lambda: ["site_id", "department"])
    group_wait: Duration = Field(30.0, ge=0)
    group_interval: Duration = Field(300.0, gt=0)
    repeat_interval: Duration | None = Field(None, gt=0, alias="remind_every",
                                             description="remind while not acknowledged "
                                             "(remind_every is the same key)")
    escalate_after: Duration | None = Field(None, gt=0)
    escalate_to: list[str] = Field(default_factory=list)
    ack_timeout: Duration | None = Field(None, gt=0)
    remind_before_due: Duration | None = Field(None, gt=0, description="default: 20% of "
                                               "the time from detection to due_at")
    mute_time_intervals: list[str] = Field(default_factory=list)
    active_time_intervals: list[str] = Field(default_factory=list)
    mute_bypass: list[Severity] = Field(default_factory=lambda: ["critical"])

    @model_validator(mode="before")
    @classmethod
    def _one_repeat_key(cls, data: object) -> object:
        """`repeat_interval` (SPEC 7.2) and `remind_every` (section 3) are one key."""
        if isinstance(data, dict) and "repeat_interval" in data and "remind_every" in data:
            raise ValueError("repeat_interval and remind_every are the same key: give one")
        return data

    @model_validator(mode="after")
    def _escalation(self) -> Route:
        if bool(self.escalate_after) != bool(self.escalate_to):
            raise ValueError("escalate_after and escalate_to go together")
        return self


class Limits(_Strict):
    max_per_10m: int = Field(10, ge=2, description="messages per channel in any 10 "
                             "minutes; past it they merge into a digest")


class NotifyConfig(_Strict):
    channels: list[Channel] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    time_intervals: list[TimeInterval] = Field(default_factory=list)
    inhibit: list[InhibitRule] = Field(default_factory=lambda: list(DEFAULT_INHIBIT))
    limits: Limits = Field(default_factory=Limits)
    templates: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="per format (generic, dingtalk, wecom, feishu, "
        "slack, email, mqtt): Jinja2 templates (sandboxed) replacing the built-in ones")

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, channels: list[Channel]) -> list[Channel]:
        seen: set[str] = set()
        for channel in channels:
            if channel.name in seen:
                raise ValueError(f"channel name {channel.name!r} is used twice")
            seen.add(channel.name)
        return channels

    @model_validator(mode="after")
    def _references(self) -> NotifyConfig:
        """Every name a route gives exists: a typo would silently drop alerts."""
        channels = {c.name for c in self.channels}
        intervals = {i.name for i in self.time_intervals}
        if len(intervals) != len(self.time_intervals):
            raise ValueError("time_intervals: a name is used twice")
        for number, route in enumerate(self.routes):
            for name in (*route.channels, *route.escalate_to):
                if name not in channels:
                    raise ValueError(f"routes[{number}]: no channel named {name!r} "
                                     f"(channels: {', '.join(sorted(channels)) or 'none'})")
            for name in (*route.mute_time_intervals, *route.active_time_intervals):
                if name not in intervals:
                    raise ValueError(f"routes[{number}]: no time interval named {name!r}")
        return self

    def channel(self, name: str) -> Channel:
        return next(c for c in self.channels if c.name == name)
