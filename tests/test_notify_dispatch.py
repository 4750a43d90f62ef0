"""The notifier's decisions with a driven clock (api.notify.outbox, api.notify.dispatch):
grouping, reminders, escalation, acknowledgement timeouts, due soon, mutes in the site's
time zone, silences, inhibition and the per-channel limit with its digest. These tests
read what was decided in the database; sending to real receivers is in
tests/integration/test_notify_delivery.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlalchemy import select

from api.auth import Principal
from api.ingest import apply_events
from api.lifecycle import decide_with, perform
from api.notify.config import NotifyConfig
from api.notify.dispatch import Dispatcher, SiteContext
from api.notify.outbox import Outbox
from api.schemas import ActionBody
from api.store import Database, HistoryEntry, Notification, NotifyMessage, Silence
from rules.events import AnyEvent
from tests.test_api import engine_event

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
MIN = timedelta(minutes=1)
EVENTS: TypeAdapter[Any] = TypeAdapter(AnyEvent)
ENGINEER = Principal(token_id=1, name="eve", role="engineer")

CHANNELS = [{"name": "eng", "kind": "webhook", "url": "http://127.0.0.1:9/eng"},
            {"name": "quality", "kind": "webhook", "url": "http://127.0.0.1:9/q"}]


def notify(*routes: dict[str, Any], **more: Any) -> NotifyConfig:
    return NotifyConfig.model_validate({"channels": CHANNELS, "routes": list(routes), **more})


class Plant:
    """NCs raised and handled at driven times, with the notifier deciding."""

    def __init__(self, db: Database, config: NotifyConfig, timezone: str = "UTC") -> None:
        self.db = db
        self.dispatcher = Dispatcher(db, config, SiteContext(timezone=timezone), {})
        self._stop = decide_with(db, Outbox(config).decide)

    def close(self) -> None:
        self._stop()

    def violation(self, asset: str, at: datetime, standard: str = "HVAC-CHW-SUPPLY",
                  standard_kind: str = "range", **info: Any) -> None:
        event = engine_event(start=at, asset=asset, standard=standard, **info)
        event["standard"]["kind"] = standard_kind
        apply_events(self.db.write, [EVENTS.validate_python(event)], now=at)

    def act(self, pk: int, verb: str, at: datetime, **body: Any) -> None:
        with self.db.write() as session:
            perform(session, pk, verb, ActionBody(**body), ENGINEER, now=at)
            session.commit()

    def notifications(self, **where: Any) -> list[Notification]:
        with self.db.session() as session:
            query = select(Notification).order_by(Notification.id)
            for key, value in where.items():
                query = query.where(getattr(Notification, key) == value)
            return list(session.scalars(query))

    def messages(self) -> list[NotifyMessage]:
        with self.db.session() as session:
            return list(session.scalars(select(NotifyMessage).order_by(NotifyMessage.id)))

    def history(self, pk: int) -> list[str]:
        with self.db.session() as session:
            return list(session.scalars(select(HistoryEntry.action).where(
                HistoryEntry.nc_pk == pk).order_by(HistoryEntry.id)))


@pytest.fixture
def plant_for(db: Database) -> Iterator[Any]:
    made: list[Plant] = []

    def make(config: NotifyConfig, timezone: str = "UTC") -> Plant:
        made.append(Plant(db, config, timezone))
        return made[-1]

    yield make
    for plant in made:
        plant.close()


def test_fifty_ncs_in_ten_seconds_are_at_most_two_messages_per_channel(plant_for: Any) -> None:
    plant = plant_for(notify({"match": {}, "channels": ["eng", "quality"],
                              "group_wait": "30s", "group_interval": "5m"}))
    for number in range(50):
        plant.violation(f"AHU-{number}", T0 + timedelta(seconds=number / 5))
    assert len(plant.notifications(status="pending")) == 100  # one per NC and channel
    assert plant.dispatcher.flush(T0 + 20 * timedelta(seconds=1)) == 0  # group_wait
    assert plant.dispatcher.flush(T0 + 41 * timedelta(seconds=1)) == 2
    for number in range(50, 55):  # later changes to the group wait group_interval
        plant.violation(f"AHU-{number}", T0 + MIN)
    assert plant.dispatcher.flush(T0 + 3 * MIN) == 0
    assert plant.dispatcher.flush(T0 + 6 * MIN) == 2
    by_channel = Counter(m.channel for m in plant.messages())
    assert by_channel == {"eng": 2, "quality": 2}
    first = plant.messages()[0]
    assert (first.kind, first.count) == ("group", 50)
    assert {n.message_id for n in plant.notifications()} == {m.id for m in plant.messages()}


def test_reminders_repeat_until_acknowledged(plant_for: Any) -> None:
    plant = plant_for(notify({"match": {}, "channels": ["eng"], "group_wait": "0s",
                              "repeat_interval": "30m"}))
    plant.violation("CH-1", T0)
    for minutes in (10, 31, 45, 62):
        plant.dispatcher.fire_timers(T0 + minutes * MIN)
    assert [n.event for n in plant.notifications()] == ["raised", "reminder", "reminder"]
    plant.act(1, "acknowledge", T0 + 70 * MIN)
    assert plant.dispatcher.fire_timers(T0 + 200 * MIN) == 0
    assert [n.event for n in plant.notifications()] == ["raised", "reminder", "reminder"]


def test_escalation_when_nobody_acknowledges(plant_for: Any) -> None:
    plant = plant_for(notify({"match": {"severity": ["major"]}, "channels": ["eng"],
                              "escalate_after": "15m", "escalate_to": ["quality"]}))
    plant.violation("CH-1", T0)
    plant.violation("CH-2", T0)
    plant.act(2, "acknowledge", T0 + 10 * MIN)
    assert plant.dispatcher.fire_timers(T0 + 16 * MIN) == 1
    escalated = plant.notifications(event="escalated")
    assert [(n.nc_pk, n.channel) for n in escalated] == [(1, "quality")]
    assert plant.history(1) == ["raised", "escalated"]  # in the NC's history
    assert plant.history(2) == ["raised", "acknowledge"]
    assert plant.dispatcher.fire_timers(T0 + 60 * MIN) == 0  # once


def test_acknowledged_but_not_rectified_notifies_again(plant_for: Any) -> None:
    plant = plant_for(notify({"match": {}, "channels": ["eng"], "ack_timeout": "2h"}))
    plant.violation("CH-1", T0)
    plant.violation("CH-2", T0)
    plant.act(1, "acknowledge", T0 + 5 * MIN)
    plant.act(2, "acknowledge", T0 + 5 * MIN)
    plant.act(2, "start", T0 + 10 * MIN)
    plant.act(2, "rectify", T0 + 30 * MIN, action="replaced the valve")
    assert plant.dispatcher.fire_timers(T0 + 2 * 60 * MIN) == 0
    assert plant.dispatcher.fire_timers(T0 + 126 * MIN) == 1
    assert [(n.nc_pk, n.event) for n in plant.notifications(event="ack_timeout")] == [
        (1, "ack_timeout")]


def test_due_soon_at_a_fifth_of_the_time_before_the_due_date(plant_for: Any) -> None:
    plant = plant_for(notify({"match": {}, "channels": ["eng"], "events": ["due_soon"]}))
    plant.violation("CH-1", T0, rectify_within=10 * 3600.0)  # due T0 + 10h: remind at 8h
    assert plant.notifications() == []  # the route takes only due_soon
    assert plant.dispatcher.fire_timers(T0 + 7 * 60 * MIN) == 0
    assert plant.dispatcher.fire_timers(T0 + 8 * 60 * MIN) == 1
    assert [n.event for n in plant.notifications()] == ["due_soon"]


def test_a_night_mute_in_shanghai_lets_critical_through(plant_for: Any) -> None:
    plant = plant_for(notify(
        {"match": {}, "channels": ["eng"], "group_wait": "0s", "group_by": ["asset_id"],
         "mute_time_intervals": ["night"]},
        time_intervals=[{"name": "night", "times": ["22:00-07:00"]}]), "Asia/Shanghai")
    night = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
    plant.violation("CH-1", night, severity="minor")
    plant.violation("CH-2", night, severity="critical")
    day = datetime(2026, 11, 26, 0, 30, tzinfo=UTC)  # 08:30 in Shanghai
    plant.violation("CH-3", day, severity="minor")
    plant.dispatcher.flush(night)
    plant.dispatcher.flush(day)
    outcome = {n.nc["asset_id"]: (n.status, n.reason) for n in plant.notifications()}
    assert outcome["CH-1"][0] == "suppressed" and "night" in (outcome["CH-1"][1] or "")
    assert outcome["CH-2"] == ("pending", None)  # in a message, sent by the next step
    assert outcome["CH-3"] == ("pending", None)
    assert len(plant.messages()) == 2


def test_a_silence_holds_back_what_it_matches_until_it_expires(
        plant_for: Any, db: Database) -> None:
    plant = plant_for(notify({"match": {}, "channels": ["eng"], "group_wait": "0s",
                              "group_by": ["asset_id"]}))
    with db.write() as session:
        session.add(Silence(matchers={"asset_id": ["CH-1"]}, starts_at=T0,
                            ends_at=T0 + 60 * MIN, comment="valve swap", author="eve"))
        session.commit()
    plant.violation("CH-1", T0 + MIN)
    plant.violation("CH-2", T0 + MIN)
    plant.dispatcher.flush(T0 + 2 * MIN)
    plant.violation("CH-1", T0 + 61 * MIN, standard="HVAC-CHW-RETURN")
    plant.dispatcher.flush(T0 + 62 * MIN)
    outcome = [(n.nc["asset_id"], n.status, n.reason) for n in plant.notifications()]
    assert outcome == [("CH-1", "suppressed", "silenced by silence 1"),
                       ("CH-2", "pending", None), ("CH-1", "pending", None)]
    assert all(n.message_id for n in plant.notifications(status="pending"))


def test_a_silent_sensor_inhibits_its_assets_other_ncs(plant_for: Any) -> None:
    plant = plant_for(notify({"match": {}, "channels": ["eng"], "group_wait": "0s",
                              "group_by": ["asset_id", "standard_id"]}))
    plant.violation("CH-1", T0, standard="CH-1-SILENT",
                    standard_kind="stale")
    plant.violation("CH-1", T0 + MIN)
    plant.violation("CH-2", T0 + MIN)
    plant.dispatcher.flush(T0 + 2 * MIN)
    outcome = [(n.nc["asset_id"], n.nc["standard_kind"], n.status, n.reason)
               for n in plant.notifications()]
    assert outcome == [
        ("CH-1", "stale", "pending", None),
        ("CH-1", "range", "suppressed", "inhibited by NC-000001 (notify.inhibit[0])"),
        ("CH-2", "range", "pending", None)]


PER_GATEWAY = {"source": {"asset_id": "gateway:gw-east"},
               "target": {"standard_kind": "stale", "asset_id": ["CH-1"]},
               "equal": ["site_id"]}


@pytest.mark.parametrize(("inhibit", "other_gateways"), [
    (None, "suppressed"), ([PER_GATEWAY], "pending")], ids=["default", "per-gateway"])
def test_a_site_of_two_gateways_inhibits_per_gateway_with_its_own_rule(
        plant_for: Any, inhibit: list[dict[str, Any]] | None, other_gateways: str) -> None:
    """docs/notifications.md: the default rule holds back a site's every stale NC while
    one gateway is offline; a rule naming the gateway's asset and the assets it serves
    holds back only those."""
    plant = plant_for(notify({"match": {}, "channels": ["eng"], "group_wait": "0s",
                              "group_by": ["asset_id"]},
                             **({"inhibit": inhibit} if inhibit else {})))
    plant.violation("gateway:gw-east", T0, standard="PATROL-GATEWAY-OFFLINE",
                    standard_kind="gateway_offline")
    plant.violation("CH-1", T0 + MIN, standard="CH-1-SILENT", standard_kind="stale")
    plant.violation("CH-2", T0 + MIN, standard="CH-2-SILENT", standard_kind="stale")
    plant.dispatcher.flush(T0 + 2 * MIN)
    outcome = {n.nc["asset_id"]: n.status for n in plant.notifications()}
    assert outcome == {"gateway:gw-east": "pending", "CH-1": "suppressed",
                       "CH-2": other_gateways}


def test_a_thousand_ncs_stay_within_the_limit_and_the_digest_counts_the_rest(
        plant_for: Any) -> None:
    plant = plant_for(notify({"match": {}, "channels": ["eng"], "group_wait": "0s",
                              "group_by": ["asset_id"]}))
    for number in range(1000):
        plant.violation(f"FCU-{number}", T0 + timedelta(seconds=number * 0.06))
    for seconds in range(0, 11 * 60, 15):
        plant.dispatcher.flush(T0 + timedelta(seconds=seconds))
    messages = plant.messages()
    for first in messages:  # any 10 minutes hold at most limits.max_per_10m messages
        window = [m for m in messages
                  if first.created_at <= m.created_at < first.created_at + 10 * MIN]
        assert len(window) <= 10
    kinds = Counter(m.kind for m in messages)
    assert kinds["group"] == 9 and kinds["digest"] >= 1
    assert sum(m.count for m in messages) == 1000  # every NC in a message: none lost
    digests = [m for m in messages if m.kind == "digest"]
    assert sum(d.count for d in digests) == 1000 - 9
    assert plant.notifications(message_id=None) == []


def test_routes_first_match_wins_unless_continue(plant_for: Any) -> None:
    plant = plant_for(notify(
        {"match": {"severity": "critical"}, "channels": ["eng"], "continue": True},
        {"match": {"department": "engineering"}, "channels": ["quality"]},
        {"match": {}, "channels": ["eng"]}))
    plant.violation("CH-1", T0, severity="critical")
    plant.violation("CH-2", T0, severity="minor")
    assert [(n.nc["asset_id"], n.channel, n.route) for n in plant.notifications()] == [
        ("CH-1", "eng", 0), ("CH-1", "quality", 1), ("CH-2", "quality", 1)]
