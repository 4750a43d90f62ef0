# ruff: noqa: RUF001  (full-width Chinese punctuation is meant)
"""Notifications end to end: NC changes -> the outbox -> the dispatcher -> the channels'
real senders -> real receivers, and what the database says became of each.

Real peers only: the chat tools' receivers (signatures, codes and rates as the tools check
them, tests/integration/chat_receivers.py), aiosmtpd with STARTTLS and AUTH
(mail_receiver.py), the machine's Mosquitto, a recording HTTP receiver, and for the
restart `patrol run` as a process over SQLite, killed with SIGKILL.

The dispatcher runs with a driven `now` (the Plant harness of tests/test_notify_dispatch.py
raises the NCs); a short wait it asks for is also waited in real time, so the tools' own
per-second windows agree with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import signal
import sqlite3
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from api.notify.config import NotifyConfig
from api.notify.dispatch import Dispatcher, SiteContext, build_senders
from api.notify.limits import Buckets
from api.store import Database, NotifyMessage
from collector.mqtt.config import MqttConfig
from tests.conftest import free_port
from tests.integration.chat_receivers import ChatServer, Robot, chat_fixture  # noqa: F401
from tests.integration.conftest import MOSQUITTO, PatrolProcess, write_site_folder
from tests.integration.mail_receiver import Mail, MailReceiver
from tests.integration.test_end_to_end import token
from tests.integration.test_handoff import call, ok, violations
from tests.integration.test_notify_channels import Subscriber
from tests.integration.webhook_receiver import (  # noqa: F401
    Answer,
    Received,
    WebhookReceiver,
    make_receiver_fixture,
)
from tests.test_notify_dispatch import MIN, T0, Plant, plant_for  # noqa: F401

SECOND = timedelta(seconds=1)
NC_ID = re.compile(r"NC-\d{6}")
PATHS = {"dingtalk": "/robot/send", "wecom": "/cgi-bin/webhook/send",
         "feishu": "/open-apis/", "slack": "/services/", "generic": "/generic/"}


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ids_in(*texts: str) -> frozenset[str]:
    return frozenset(NC_ID.findall(" ".join(texts)))


def part(mail: Mail, subtype: str) -> str:
    """The text of an email's plain or html alternative."""
    body = mail.message.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    return str(body.get_content())


class Rig:
    """A Dispatcher with the real senders (`build_senders` over one aiohttp session) on an
    event loop of its own, so a test drives it pass by pass with its own `now`; `plant`
    raises the NCs (its decisions go to the same database)."""

    def __init__(self, db: Database, plant: Plant, config: NotifyConfig, site: SiteContext,
                 mqtt: MqttConfig | None = None) -> None:
        self.db = db
        self.plant = plant
        self.loop = asyncio.new_event_loop()
        self.http = self.run(self._session())
        self.senders = build_senders(config, self.http, mqtt)
        self.dispatcher = Dispatcher(db, config, site, self.senders, buckets=Buckets())

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def flush(self, now: datetime) -> int:
        return self.dispatcher.flush(now)

    def send_due(self, now: datetime) -> int:
        return int(self.run(self.dispatcher.send_due(now)))

    def messages(self, **where: Any) -> list[NotifyMessage]:
        with self.db.session() as session:
            query = select(NotifyMessage).order_by(NotifyMessage.id)
            for key, value in where.items():
                query = query.where(getattr(NotifyMessage, key) == value)
            return list(session.scalars(query))

    def deliver_all(self, now: datetime, timeout: float = 20.0) -> datetime:
        """Send until no message is pending, `now` driven to each next attempt (waited in
        real time too when it is short); returns the last `now`."""
        deadline = time.monotonic() + timeout
        while True:
            self.send_due(now)
            pending = self.messages(status="pending")
            if not pending:
                return now
            assert time.monotonic() < deadline, [(m.channel, m.last_error) for m in pending]
            due = min(aware(m.next_attempt_at) for m in pending)
            wait = (due - now).total_seconds()
            if 0 < wait <= 2:
                time.sleep(wait)
            now = max(now, due)

    def close(self) -> None:
        async def closed() -> None:
            for sender in self.senders.values():
                await sender.close()
            await self.http.close()

        self.run(closed())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


@pytest.fixture
def rig_for(db: Database, request: pytest.FixtureRequest) -> Iterator[Callable[..., Rig]]:
    """Rig(config, site=SiteContext(), mqtt=None), closed after the test."""
    plants = request.getfixturevalue("plant_for")  # tests/test_notify_dispatch.py's
    made: list[Rig] = []

    def make(config: NotifyConfig, site: SiteContext | None = None,
             mqtt: MqttConfig | None = None) -> Rig:
        site = site or SiteContext()
        made.append(Rig(db, plants(config, site.timezone), config, site, mqtt))
        return made[-1]

    yield make
    for rig in made:
        rig.close()


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[MailReceiver]:
    """aiosmtpd requiring STARTTLS, then AUTH."""
    server = MailReceiver(tmp_path / "smtp").start()
    yield server
    server.stop()


def robot_channel(name: str, robot: Robot, monkeypatch: pytest.MonkeyPatch,
                  secret: str | None = None) -> dict[str, Any]:
    """A chat channel whose URL (and secret) come from the environment, as site.yaml
    requires for a robot's key."""
    env = f"PATROL_TEST_{name.upper()}"
    monkeypatch.setenv(f"{env}_URL", robot.url)
    channel: dict[str, Any] = {"name": name, "kind": "webhook", "format": robot.tool,
                               "url_env": f"{env}_URL"}
    if secret is not None:
        monkeypatch.setenv(f"{env}_SECRET", secret)
        channel["secret_env"] = f"{env}_SECRET"
    return channel


def mail_channel(server: MailReceiver, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("PATROL_TEST_SMTP_PASSWORD", server.users["patrol"])
    return {"name": "mail", "kind": "email", "smtp": server.url, "starttls": True,
            "ca_file": str(server.ca_file), "username": "patrol",
            "password_env": "PATROL_TEST_SMTP_PASSWORD", "from": "patrol@example.com",
            "to": ["quality@example.com"]}


def notify(channels: list[dict[str, Any]], limit: int = 10, **route: Any) -> NotifyConfig:
    """One route sending every NC to every channel; `limit` messages per 10 minutes."""
    return NotifyConfig.model_validate({
        "channels": channels, "limits": {"max_per_10m": limit},
        "routes": [{"match": {}, "channels": [c["name"] for c in channels], **route}]})


def statuses(plant: Plant) -> Counter[tuple[str, str, str]]:
    """(NC id, channel, status) of every notification."""
    return Counter((n.nc["id"], n.channel, n.status) for n in plant.notifications())


# --- 1. every kind of channel ------------------------------------------------------------

def test_every_channel_delivers_the_group_and_the_digest_once(
        no_threads_left: None, chat: ChatServer, mail: MailReceiver,
        rig_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    robots = {"generic": chat.add("generic"),
              "dingtalk": chat.add("dingtalk", secret=f"SEC{uuid.uuid4().hex}"),
              "wecom": chat.add("wecom"),
              "feishu": chat.add("feishu", secret=uuid.uuid4().hex),
              "slack": chat.add("slack")}
    topic = f"patrol-test/{uuid.uuid4().hex}/alerts"
    channels = [robot_channel(tool, robot, monkeypatch, robot.secret)
                for tool, robot in robots.items()]
    channels += [mail_channel(mail, monkeypatch), {"name": "siren", "kind": "mqtt",
                                                   "topic": topic}]
    # limit 2: the most severe group goes alone, the two others merge into a digest
    config = notify(channels, limit=2, group_by=["severity"], group_wait="30s")
    site_mqtt = MqttConfig(url=f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}",
                           client_id=f"t-{uuid.uuid4().hex[:8]}")
    rig = rig_for(config, mqtt=site_mqtt)
    plant = rig.plant
    subscriber = Subscriber(MOSQUITTO[1], topic)
    try:
        for number, severity in enumerate(("critical", "critical", "major", "minor")):
            plant.violation(f"CH-{number + 1}", T0 + number * SECOND, severity=severity)
        assert rig.flush(T0 + 10 * SECOND) == 0  # group_wait
        assert rig.flush(T0 + 40 * SECOND) == 2 * len(channels)  # every group due
        rig.deliver_all(T0 + 40 * SECOND)
        published = subscriber.wait(2)
    finally:
        subscriber.close()

    group, digest = frozenset({"NC-000001", "NC-000002"}), frozenset({"NC-000003",
                                                                      "NC-000004"})
    expected = sorted([group, digest], key=sorted)
    got = {tool: [ids_in(json.dumps(m, ensure_ascii=False)) for m in robot.accepted]
           for tool, robot in robots.items()}
    got["mail"] = [ids_in(str(m.message["Subject"]), part(m, "plain")) for m in mail.messages]
    got["siren"] = [ids_in(m.payload.decode()) for m in published]
    assert {tool: sorted(found, key=sorted) for tool, found in got.items()} == \
        dict.fromkeys(got, expected)
    for tool, path in PATHS.items():  # each accepted at its first attempt: nothing refused
        assert [seen.status for seen in chat.hits(path)] == [200, 200], tool
    assert all(m.tls and m.login == "patrol" for m in mail.messages)
    kinds = sorted(m["notice"]["kind"] for m in robots["generic"].accepted)
    assert kinds == ["digest", "group"]

    messages = rig.messages()
    assert [(m.status, m.attempts) for m in messages] == [("sent", 1)] * 14
    assert Counter(m.kind for m in messages) == {"group": 7, "digest": 7}
    names = [c["name"] for c in channels]
    assert statuses(plant) == Counter(
        {(nc, name, "sent" if nc in group else "merged"): 1
         for nc in group | digest for name in names})
    merged = plant.notifications(status="merged")
    digests = {m.id for m in messages if m.kind == "digest"}
    assert {n.reason for n in merged} == {f"in digest message {n}" for n in digests}


# --- 2. a failing channel delays only itself ---------------------------------------------

def sent_metric(channel: str, outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("patrol_notifications_total",
                                     {"channel": channel, "outcome": outcome}) or 0.0


def test_a_failing_channel_never_blocks_another(
        tmp_path: Path, chat: ChatServer, make_receiver: Callable[[], WebhookReceiver],
        rig_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    working = chat.add("generic")
    broken = make_receiver()  # HTTP 500 once, then well
    broken.answer(Answer(500))
    down = MailReceiver(tmp_path / "smtp")  # its port chosen, nobody listening yet
    config = notify([{"name": "eng", "kind": "webhook", "url": working.url},
                     {"name": "ops", "kind": "webhook", "url": broken.url},
                     mail_channel(down, monkeypatch)], group_wait="0s")
    rig = rig_for(config)
    plant = rig.plant
    plant.violation("CH-1", T0)
    assert rig.flush(T0) == 3
    counted = {(channel, outcome): sent_metric(channel, outcome)
               for channel in ("eng", "ops", "mail") for outcome in ("sent", "retry")}
    try:
        assert rig.send_due(T0) == 1
        assert [e["nc"]["id"] for e in working.accepted[0]["entries"]] == ["NC-000001"]
        assert [r.status for r in broken.received] == [500]
        by_channel = {m.channel: m for m in rig.messages()}
        assert by_channel["eng"].status == "sent"
        for name, error in (("ops", "HTTP 500"), ("mail", "ConnectionRefusedError")):
            message = by_channel[name]
            assert (message.status, message.attempts) == ("pending", 1)
            assert error in (message.last_error or ""), message.last_error
            assert aware(message.next_attempt_at) > T0
        assert statuses(plant) == {("NC-000001", "eng", "sent"): 1,
                                   ("NC-000001", "ops", "pending"): 1,
                                   ("NC-000001", "mail", "pending"): 1}
        assert rig.send_due(T0 + SECOND) == 0  # not due again yet: not hammered
        assert len(broken.received) == 1

        down.start()  # both recover
        later = max(aware(m.next_attempt_at) for m in rig.messages(status="pending"))
        assert rig.send_due(later) == 2
    finally:
        down.stop()
    assert [r.status for r in broken.received] == [500, 200]
    assert ids_in(broken.received[-1].body.decode()) == {"NC-000001"}
    assert [ids_in(part(m, "plain")) for m in down.messages] == [{"NC-000001"}]
    assert len(working.accepted) == 1  # the working channel was not sent again
    assert {(m.channel, m.status, m.attempts) for m in rig.messages()} == {
        ("eng", "sent", 1), ("ops", "sent", 2), ("mail", "sent", 2)}
    # patrol_notifications_total counted each attempt by its outcome (docs/metrics.md)
    assert {key: sent_metric(*key) - before for key, before in counted.items()} == {
        ("eng", "sent"): 1, ("eng", "retry"): 0, ("ops", "sent"): 1, ("ops", "retry"): 1,
        ("mail", "sent"): 1, ("mail", "retry"): 1}
    assert set(statuses(plant)) == {("NC-000001", c, "sent") for c in ("eng", "ops", "mail")}


def test_a_hanging_channel_does_not_hold_back_anothers_settling(
        chat: ChatServer, make_receiver: Callable[[], WebhookReceiver],
        rig_for: Any) -> None:
    """A message delivered is recorded as sent at once, not when the slowest channel of the
    pass answers: until then a crash would send it again after the restart."""
    working = chat.add("generic")
    hanging = make_receiver()
    gate = threading.Event()

    def hold(request: Received) -> Answer | None:
        gate.wait(15)  # the request hangs until the test lets it go
        return None

    hanging.rule = hold
    config = notify([{"name": "eng", "kind": "webhook", "url": working.url},
                     {"name": "ops", "kind": "webhook", "url": hanging.url}], group_wait="0s")
    rig = rig_for(config)
    rig.plant.violation("CH-1", T0)
    assert rig.flush(T0) == 2
    sending = threading.Thread(target=rig.send_due, args=(T0,), name="send-due")
    sending.start()
    try:
        while sending.is_alive():  # i.e. while ops hangs (at most its 10 s timeout)
            if {m.channel: m.status for m in rig.messages()}["eng"] == "sent":
                break
            time.sleep(0.02)
        assert sending.is_alive(), "eng's message was settled only after ops answered"
        assert not gate.is_set() and len(working.accepted) == 1
    finally:
        gate.set()
        sending.join(20)
    assert {(m.channel, m.status, m.attempts) for m in rig.messages()} == {
        ("eng", "sent", 1), ("ops", "sent", 1)}


def test_a_hanging_channel_does_not_delay_anothers_next_messages(
        chat: ChatServer, make_receiver: Callable[[], WebhookReceiver],
        rig_for: Any) -> None:
    """The running loop sends in the background (`wait=False`): while ops hangs, eng's
    later messages go out pass after pass, and ops is not sent to twice at once."""
    working = chat.add("generic")
    hanging = make_receiver()
    gate = threading.Event()

    held: list[str] = []  # the receiver's own list is locked while a request is held

    def hold(request: Received) -> Answer | None:
        held.append(request.body.decode())
        gate.wait(15)
        return None

    hanging.rule = hold
    config = notify([{"name": "eng", "kind": "webhook", "url": working.url},
                     {"name": "ops", "kind": "webhook", "url": hanging.url}],
                    group_wait="0s", group_by=["asset_id"])
    rig = rig_for(config)
    try:
        for number, asset in enumerate(("CH-1", "CH-2", "CH-3")):
            now = T0 + number * SECOND
            rig.plant.violation(asset, now)
            rig.flush(now)
            deadline = time.monotonic() + 5
            while len(working.accepted) < number + 1:  # eng: delivered while ops hangs
                assert time.monotonic() < deadline, "eng waited for ops"
                # pass after pass, as the running loop does: eng's previous send may still
                # be settling (busy) when a pass claims, and is then left to the next one
                rig.run(rig.dispatcher.send_due(now, wait=False))
                rig.run(asyncio.sleep(0.02))
        assert not gate.is_set()
        assert len(held) == 1  # ops's other messages wait for its first
    finally:
        gate.set()
    deadline = time.monotonic() + 20
    while {m.status for m in rig.messages(channel="ops")} != {"sent"}:
        assert time.monotonic() < deadline, [
            (m.status, m.attempts, m.last_error, m.next_attempt_at, m.lease_until)
            for m in rig.messages(channel="ops")]
        rig.run(asyncio.sleep(0.05))
        rig.run(rig.dispatcher.send_due(T0 + 3 * SECOND, wait=False))
    assert len(held) == 3 and len(ids_in(*held)) == 3  # each of ops's messages once


# --- 3. a tool's rate-limit code means wait ----------------------------------------------

def test_dingtalk_throttled_by_its_robot_postpones_then_delivers(
        chat: ChatServer, rig_for: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("dingtalk")
    for number in range(20):  # another system on the same robot used this minute's 20
        request = urllib.request.Request(
            robot.url, method="POST", headers={"content-type": "application/json"},
            data=json.dumps({"msgtype": "text", "text": {"content": f"other {number}"}})
            .encode())
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["errcode"] == 0
    config = notify([robot_channel("eng", robot, monkeypatch)], group_wait="0s")
    rig = rig_for(config)
    plant = rig.plant
    plant.violation("CH-1", T0)
    assert rig.flush(T0) == 1
    assert rig.send_due(T0) == 0
    [message] = rig.messages()
    assert message.status == "pending" and "130101" in (message.last_error or "")
    assert aware(message.next_attempt_at) >= T0 + 10 * MIN  # the robot's 10 minutes
    assert statuses(plant) == {("NC-000001", "eng", "pending"): 1}
    assert rig.send_due(T0 + 5 * MIN) == 0
    assert len(chat.hits(PATHS["dingtalk"])) == 21  # no attempt while throttled

    with chat._lock:  # ten minutes pass at the tool
        robot.blocked_until = 0.0
        robot.sent.clear()
    assert rig.send_due(aware(message.next_attempt_at)) == 1
    assert ids_in(robot.accepted[-1]["markdown"]["text"]) == {"NC-000001"}
    assert len(robot.accepted) == 21
    assert [(m.status, m.attempts) for m in rig.messages()] == [("sent", 2)]
    assert statuses(plant) == {("NC-000001", "eng", "sent"): 1}


# --- 4. a permanent refusal fails, with the reason ---------------------------------------

def test_a_wrong_dingtalk_secret_fails_the_message_and_says_why(
        chat: ChatServer, rig_for: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("dingtalk", secret="SEC-right")
    config = notify([robot_channel("eng", robot, monkeypatch, "SEC-wrong")], group_wait="0s")
    rig = rig_for(config)
    plant = rig.plant
    plant.violation("CH-1", T0)
    plant.violation("CH-2", T0)
    assert rig.flush(T0) == 1
    assert rig.send_due(T0) == 0
    [message] = rig.messages()
    assert (message.status, message.attempts) == ("failed", 1)
    failed = plant.notifications()
    assert [(n.nc["id"], n.status) for n in failed] == [("NC-000001", "failed"),
                                                       ("NC-000002", "failed")]
    for row in failed:
        assert "310000" in (row.reason or "") and robot.key not in (row.reason or "")
        assert row.reason == message.last_error
    assert rig.send_due(T0 + timedelta(days=1)) == 0  # failed is final: never tried again
    assert len(chat.hits(PATHS["dingtalk"])) == 1 and robot.accepted == []


# --- 6. zh-CN ----------------------------------------------------------------------------

def no_english_outside(text: str, data: list[str]) -> str:
    """`text` less tags, entities and `data`: what must hold no Latin letter."""
    rest = html.unescape(re.sub(r"<[^>]+>", "", text))
    for value in sorted(data, key=len, reverse=True):
        rest = rest.replace(value, "")
    return rest


def test_a_chinese_site_hears_chinese_in_shanghai_time(
        chat: ChatServer, mail: MailReceiver, rig_for: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("generic")
    config = notify([{"name": "eng", "kind": "webhook", "url": robot.url},
                     mail_channel(mail, monkeypatch)], group_wait="0s")
    rig = rig_for(config, SiteContext(name="一号楼", timezone="Asia/Shanghai",
                                      locale="zh-CN"))
    plant = rig.plant
    for asset in ("CH-1", "CH-2"):  # T0 is 10:00 in Shanghai; due a day later
        plant.violation(asset, T0, title="冷冻水供水温度 6-8 ℃", clause="运维手册 4.2")
    assert rig.flush(T0) == 2
    rig.deliver_all(T0)

    [document] = robot.accepted
    [letter] = mail.messages
    title = "【巡查】一号楼：新发现 2 项不合格项"
    assert document["title"] == title and str(letter.message["Subject"]) == title
    for body in (document["text"], part(letter, "plain"), part(letter, "html")):
        for words in ("NC-000001", "NC-000002", "【重要】", "冷冻水供水温度 6-8 ℃", "新发现",
                      "设备：CH-1", "设备：CH-2", "检查标准：HVAC-CHW-SUPPLY 条款 运维手册 4.2",
                      "实测值：9.4（限值 6 至 8）", "发现时间：2026年11月25日 10:00",
                      "整改时限：2026年11月26日 10:00", "责任人：工程部"):
            assert words in body, (words, body)
        rest = no_english_outside(body, ["NC-000001", "NC-000002", "CH-1", "CH-2",
                                         "HVAC-CHW-SUPPLY"])
        assert not re.search(r"[A-Za-z]", rest), rest
    assert set(statuses(plant)) == {(nc, channel, "sent") for nc in ("NC-000001", "NC-000002")
                                    for channel in ("eng", "mail")}


def test_with_a_public_url_an_alert_links_the_consoles_nc_page_and_its_ack_page(
        chat: ChatServer, rig_for: Any) -> None:
    robot = chat.add("generic")
    config = notify([{"name": "eng", "kind": "webhook", "url": robot.url}], group_wait="0s")
    rig = rig_for(config, SiteContext(name="Tower A", public_url="https://patrol.example"))
    rig.plant.violation("CH-1", T0)
    assert rig.flush(T0) == 1
    rig.deliver_all(T0)
    [document] = robot.accepted
    assert "https://patrol.example/ncs/NC-000001" in document["text"]  # the console's page
    assert "https://patrol.example/ack/" in document["text"]


# --- 5. a restart loses nothing and doubles nothing --------------------------------------

STANDARDS = """
standards:
  - id: HVAC-CHW-SUPPLY
    title: Chilled water supply temperature 6-8 degC
    applies_to: {asset_types: [chiller]}
    metric: chw_supply_temp
    check: {min: 6, max: 8}
    severity: major
"""
RETRY_AFTER = 5
"""Seconds the receiver asks for after a first attempt: time enough to kill the process
between attempts, so no request is in flight and 'twice' means twice."""


def read_messages(database: Path) -> list[tuple[int, str, int, str | None]]:
    """(id, status, attempts, lease_until) of every message, read beside the process."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True,
                                            timeout=10)) as connection:
        try:
            return connection.execute("SELECT id, status, attempts, lease_until FROM "
                                      "notify_messages ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []


def wait_for_messages(database: Path, predicate: Callable[[list[Any]], bool], what: str,
                      timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    rows = read_messages(database)
    while not predicate(rows):
        assert time.monotonic() < deadline, f"{what} not within {timeout}s: {rows}"
        time.sleep(0.05)
        rows = read_messages(database)
    return rows


def test_a_restart_with_deliveries_pending_loses_and_doubles_nothing(
        tmp_path: Path, make_receiver: Callable[[], WebhookReceiver]) -> None:
    receiver = make_receiver()
    tried: set[str] = set()

    def first_attempt_fails(request: Received) -> Answer | None:
        nc = next(iter(ids_in(request.body.decode())), "")
        if nc in tried:
            return None
        tried.add(nc)
        return Answer(503, {"retry-after": str(RETRY_AFTER)})

    receiver.rule = first_attempt_fails
    port = free_port()
    site = write_site_folder(tmp_path, standards=STANDARDS, api_port=port, site=f"""
site: {{id: tower-a, timezone: Asia/Shanghai}}
assets: [{{id: CH-1, type: chiller, department: engineering}}]
notify:
  channels: [{{name: hook, kind: webhook, url: "{receiver.url}"}}]
  routes: [{{match: {{}}, channels: [hook], group_wait: 0s, group_by: [asset_id]}}]
  limits: {{max_per_10m: 100}}
""")
    agent = token(site, "agent")
    database = tmp_path / "data" / "patrol.sqlite"
    assets = [f"CH-{n}" for n in range(1, 13)]
    base = f"http://127.0.0.1:{port}/api/v1"

    process = PatrolProcess("run", "-c", site, cwd=tmp_path)
    try:
        process.wait_for_output("Patrol API on")
        ok(call(base, "POST", "/events", agent, {"events": violations(assets)}))
        wait_for_messages(database, lambda rows: len(rows) == len(assets) and all(
            (status, attempts, lease) == ("pending", 1, None)
            for _, status, attempts, lease in rows), "every message tried once, 503")
        process.stop(signal.SIGKILL)  # between attempts: every delivery pending
        assert process.proc.returncode == -signal.SIGKILL
        assert len(receiver.received) == len(assets)

        process = PatrolProcess("run", "-c", site, cwd=tmp_path)
        process.wait_for_output("Patrol API on")
        wait_for_messages(database, lambda rows: len(rows) == len(assets) and all(
            status == "sent" for _, status, _, _ in rows), "every message sent")
    finally:
        code = process.stop()
    assert code == 0, process.output

    received = receiver.received
    expected = {f"NC-{n:06d}" for n in range(1, len(assets) + 1)}
    delivered = Counter(nc for r in received if r.status == 200
                        for nc in ids_in(r.body.decode()))
    assert set(delivered) == expected  # none lost
    assert set(delivered.values()) == {1}  # none twice
    assert Counter(r.status for r in received) == {503: len(assets), 200: len(assets)}
    assert [row[1:3] for row in read_messages(database)] == [("sent", 2)] * len(assets)
