"""Notification channels against real peers: chat tools' receivers that check signatures,
sizes and rates as the tools do (chat_receivers), aiosmtpd with STARTTLS or implicit TLS
and AUTH (mail_receiver), Mosquitto.

The renderer is this file's own `render` (NC ids and titles, as many as fit, "+N more"):
the channels are tested apart from api.notify.render.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import paho.mqtt.client as mqtt
import pytest

from api.notify.channels import make_sender
from api.notify.channels.mqtt import MqttSender
from api.notify.channels.webhook import WebhookSender
from api.notify.config import Channel
from api.notify.message import Entry, Notice, Outcome, Rendered
from collector.mqtt.config import MqttConfig
from tests.integration.chat_receivers import ChatServer, chat_fixture  # noqa: F401
from tests.integration.conftest import MOSQUITTO
from tests.integration.mail_receiver import MailReceiver
from tests.integration.mosquitto import Mosquitto, mosquitto_available
from tests.integration.webhook_receiver import (  # noqa: F401
    Answer,
    WebhookReceiver,
    receiver_fixture,
)

# aiosmtpd cannot see implicit TLS, so the smtps receiver requires AUTH "without TLS"
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

TITLE = "冷水机组出水温度过高"


def render(notice: Notice, style: str, limit: int) -> Rendered:
    """Each NC as `event: id title`, as many as fit in `limit` bytes, then "+N more"."""
    lines: list[str] = []
    for entry in notice.entries:
        line = f"{entry.event}: {entry.nc['id']} {entry.nc['title']}"
        tail = f"\n+{notice.total - len(lines) - 1} more" if len(lines) + 1 < notice.total \
            else ""
        if len("\n".join([*lines, line]).encode() + tail.encode()) > limit:
            break
        lines.append(line)
    rest = notice.total - len(lines)
    body = "\n".join(lines + ([f"+{rest} more"] if rest else []))
    if style == "html":
        body = f"<pre>{html.escape(body)}</pre>"
        body = body if len(body.encode()) <= limit else ""
    return Rendered(f"[{style}] {notice.total} 不合格项 {TITLE}", body, len(lines))


def notice(count: int = 1, severity: str = "critical", channel: str = "c") -> Notice:
    entries = tuple(Entry("raised", {"id": f"NC-{n:05d}", "title": f"{TITLE} #{n}",
                                     "severity": severity, "asset_id": "CH-1"},
                          nc_url=f"https://patrol.example/nc/NC-{n:05d}")
                    for n in range(count))
    return Notice(channel, "group", entries, count, locale="zh-CN")


def webhook(tool: str, monkeypatch: pytest.MonkeyPatch, url: str, secret: str | None = None,
            **extra: object) -> Channel:
    name = f"{tool}-{uuid.uuid4().hex[:6]}"
    env = name.upper().replace("-", "_")
    monkeypatch.setenv(f"{env}_URL", url)
    if secret is not None:
        monkeypatch.setenv(f"{env}_SECRET", secret)
    return Channel(name=name, kind="webhook", format=tool, url_env=f"{env}_URL",
                   secret_env=f"{env}_SECRET" if secret is not None else None, **extra)


def send(channel: Channel, *notices: Notice, clock: Callable[[], float] | None = None,
         until: Callable[[Outcome], bool] | None = None) -> list[Outcome]:
    """Each notice through a fresh sender, in turn (stopping after one `until` holds)."""

    async def run() -> list[Outcome]:
        async with aiohttp.ClientSession() as http:
            sender = make_sender(channel, render, site_mqtt=None, http=http)
            if clock is not None:
                assert isinstance(sender, WebhookSender)
                sender.clock = clock
            outcomes = []
            try:
                for item in notices:
                    outcomes.append(await sender.send(item))
                    if until is not None and until(outcomes[-1]):
                        break
            finally:
                await sender.close()
            return outcomes

    return asyncio.run(run())


def refused(outcome: Outcome) -> bool:
    return not outcome.ok


# --- DingTalk -----------------------------------------------------------------------------

def test_dingtalk_signed_markdown_with_mentions(chat: ChatServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("dingtalk", secret="SEC" + uuid.uuid4().hex)
    channel = webhook("dingtalk", monkeypatch, robot.url, robot.secret,
                      mention={"mobiles": ["13800138000"], "user_ids": ["manager01"]})
    [outcome] = send(channel, notice(3))
    assert outcome == Outcome(True)
    [message] = robot.accepted
    assert message["msgtype"] == "markdown"
    assert message["markdown"]["title"].startswith("[dingtalk] 3 不合格项")
    text = message["markdown"]["text"]
    assert "NC-00000" in text and "NC-00002" in text
    assert text.endswith("@13800138000 @manager01")  # DingTalk shows only mentions in text
    assert message["at"] == {"atMobiles": ["13800138000"], "atUserIds": ["manager01"],
                             "isAtAll": False}


def test_dingtalk_refuses_a_wrong_secret_or_clock_for_good(
        chat: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("dingtalk", secret="SEC-right")
    [wrong] = send(webhook("dingtalk", monkeypatch, robot.url, "SEC-wrong"), notice())
    late = webhook("dingtalk", monkeypatch, robot.url, robot.secret)
    [skewed] = send(late, notice(), clock=lambda: chat.clock() - 2 * 3600)
    assert not wrong.ok and wrong.permanent and "310000" in (wrong.error or "")
    assert not skewed.ok and skewed.permanent and "timestamp" in (skewed.error or "")
    assert robot.accepted == []
    assert robot.key not in (wrong.error or "") + (skewed.error or "")


def test_dingtalk_over_20_a_minute_waits_for_the_throttle(
        chat: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("dingtalk")
    outcomes = send(webhook("dingtalk", monkeypatch, robot.url), *[notice()] * 40,
                    until=refused)
    assert [o.ok for o in outcomes[:20]] == [True] * 20
    last = outcomes[-1]
    assert not last.ok and not last.permanent and last.retry_after == 600.0
    assert "130101" in (last.error or "")
    [blocked] = send(webhook("dingtalk", monkeypatch, robot.url), notice())  # still throttled
    assert blocked.retry_after == 600.0 and len(robot.accepted) == len(outcomes) - 1


def test_dingtalk_long_notice_fits_20000_bytes(chat: ChatServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("dingtalk")
    [outcome] = send(webhook("dingtalk", monkeypatch, robot.url,
                             mention={"mobiles": ["13800138000"]}), notice(2000))
    assert outcome.ok
    text = robot.accepted[0]["markdown"]["text"]
    assert 19000 < len(text.encode()) <= 20000
    assert "more" in text and text.endswith("@13800138000")


# --- WeCom --------------------------------------------------------------------------------

def test_wecom_markdown_and_text(chat: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("wecom")
    mention = {"mobiles": ["13800138000"], "user_ids": ["zhangsan"], "all": True}
    markdown = webhook("wecom", monkeypatch, robot.url, mention=mention)
    text = webhook("wecom", monkeypatch, robot.url, msgtype="text", mention=mention)
    assert send(markdown, notice(500)) + send(text, notice(500)) == [Outcome(True)] * 2
    first, second = robot.accepted
    assert first["msgtype"] == "markdown"
    assert first["markdown"]["content"].endswith("\n<@zhangsan>")
    assert 3900 < len(first["markdown"]["content"].encode()) <= 4096
    assert second["msgtype"] == "text"
    assert second["text"]["mentioned_list"] == ["zhangsan", "@all"]
    assert second["text"]["mentioned_mobile_list"] == ["13800138000"]
    assert 1900 < len(second["text"]["content"].encode()) <= 2048
    assert "more" in second["text"]["content"]


def test_wecom_rate_limit_and_unknown_key(chat: ChatServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("wecom")
    outcomes = send(webhook("wecom", monkeypatch, robot.url), *[notice()] * 40, until=refused)
    assert outcomes[-1].retry_after == 60.0 and not outcomes[-1].permanent
    assert "45009" in (outcomes[-1].error or "") and len(robot.accepted) == 20
    [gone] = send(webhook("wecom", monkeypatch, robot.url.replace(robot.key, "0" * 24)),
                  notice())
    assert gone.permanent and "93000" in (gone.error or "")


# --- Feishu -------------------------------------------------------------------------------

def test_feishu_signed_card_within_20_kb(chat: ChatServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("feishu", secret="feishu-secret")
    [small, large] = send(webhook("feishu", monkeypatch, robot.url, robot.secret),
                          notice(2), notice(3000))
    assert small.ok and large.ok
    card = robot.accepted[0]["card"]
    assert robot.accepted[0]["msg_type"] == "interactive"
    assert card["header"]["title"]["content"].startswith("[feishu] 2 不合格项")
    assert card["header"]["template"] == "red"
    assert "NC-00001" in card["elements"][0]["text"]["content"]
    big = [seen for seen in chat.hits("/open-apis/") if seen.status == 200][-1]
    assert 19000 < len(big.body) <= 20 * 1024


def test_feishu_wrong_secret_and_rate_limit(chat: ChatServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("feishu", secret="right")
    [wrong] = send(webhook("feishu", monkeypatch, robot.url, "wrong"), notice())
    assert wrong.permanent and "19021" in (wrong.error or "")
    outcomes = send(webhook("feishu", monkeypatch, robot.url, robot.secret),
                    *[notice()] * 120, until=refused)
    assert not outcomes[-1].ok and outcomes[-1].retry_after == 60.0
    assert "11232" in (outcomes[-1].error or "") and 5 <= len(robot.accepted) <= 100


# --- Slack and generic --------------------------------------------------------------------

def test_slack_blocks_and_one_a_second(chat: ChatServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("slack")
    outcomes = send(webhook("slack", monkeypatch, robot.url), *[notice(900)] * 20,
                    until=refused)
    assert outcomes[0].ok
    assert not outcomes[-1].ok and outcomes[-1].retry_after == 1.0
    message = robot.accepted[0]
    header, section = message["blocks"]
    assert message["text"].startswith("[slack] 900")
    assert header["type"] == "header" and section["text"]["type"] == "mrkdwn"
    assert 2900 < len(section["text"]["text"]) <= 3000


def test_generic_carries_the_ncs(chat: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    robot = chat.add("generic")
    [outcome] = send(webhook("generic", monkeypatch, robot.url), notice(2, "major", "ops"))
    assert outcome.ok
    [document] = robot.accepted
    assert document["notice"] == {"kind": "group", "total": 2, "channel": "ops",
                                  "severity": "major"}
    assert [e["nc"]["id"] for e in document["entries"]] == ["NC-00000", "NC-00001"]
    assert document["entries"][0]["nc"]["title"] == f"{TITLE} #0"
    assert document["text"].startswith("raised: NC-00000")


def test_http_answers_decide_retry_or_permanent(receiver: WebhookReceiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.answer(Answer(500), Answer(503, {"retry-after": "7"}), Answer(408),
                    Answer(400), Answer(429), then=Answer(204))
    outcomes = send(webhook("generic", monkeypatch, receiver.url), *[notice()] * 6)
    assert [(o.ok, o.permanent, o.retry_after) for o in outcomes] == [
        (False, False, None), (False, False, 7.0), (False, False, None),
        (False, True, None), (False, False, None), (True, False, None)]


def test_a_redirect_is_not_followed(chat: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    [outcome] = send(webhook("generic", monkeypatch, f"{chat.base}/moved"), notice())
    assert not outcome.ok and "redirect" in (outcome.error or "")
    assert chat.hits("/generic/moved") == []


def test_the_url_key_is_never_shown(chat: ChatServer, monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    robot = chat.add("dingtalk", secret="SEC-right")
    slack = chat.add("slack")
    closed = f"http://127.0.0.1:9/robot/send?access_token={robot.key}"
    outcomes = (send(webhook("dingtalk", monkeypatch, robot.url, "SEC-wrong"), notice())
                + send(webhook("dingtalk", monkeypatch, closed), notice())
                + send(webhook("slack", monkeypatch, slack.url + "x"), notice())
                + send(webhook("dingtalk", monkeypatch,
                               f"{chat.base}/moved?access_token={robot.key}"), notice()))
    assert [o.ok for o in outcomes] == [False] * 4
    assert outcomes[2].permanent and "no_service" in (outcomes[2].error or "")
    shown = " ".join(o.error or "" for o in outcomes) + caplog.text
    assert "notify" in caplog.text  # the failures were logged...
    assert robot.key not in shown and slack.key not in shown  # ...without the keys


# --- email --------------------------------------------------------------------------------

@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[MailReceiver]:
    server = MailReceiver(tmp_path / "smtp").start()
    yield server
    server.stop()


@pytest.fixture
def smtps(tmp_path: Path) -> Iterator[MailReceiver]:
    server = MailReceiver(tmp_path / "smtps", implicit=True).start()
    yield server
    server.stop()


def mail_channel(server: MailReceiver, monkeypatch: pytest.MonkeyPatch,
                 password: str | None = None, **extra: object) -> Channel:
    monkeypatch.setenv("PATROL_TEST_SMTP_PASSWORD", password or server.users["patrol"])
    fields: dict[str, object] = {"ca_file": server.ca_file, "username": "patrol",
                                 "password_env": "PATROL_TEST_SMTP_PASSWORD",
                                 # on this machine STARTTLS is not asked for by default
                                 "starttls": server.url.startswith("smtp:"), **extra}
    return Channel(name="mail", kind="email", smtp=server.url, from_="patrol@example.com",
                   to=["quality@example.com", "工程部@example.com"], **fields)


@pytest.mark.parametrize("which", ["smtp", "smtps"])
def test_email_over_tls_with_auth_keeps_chinese(which: str, request: pytest.FixtureRequest,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    server: MailReceiver = request.getfixturevalue(which)
    [outcome] = send(mail_channel(server, monkeypatch), notice(2))
    assert outcome == Outcome(True)
    [mail] = server.messages
    assert mail.tls and mail.login == "patrol"
    message = mail.message
    assert message["Subject"] == f"[text] 2 不合格项 {TITLE}"
    assert message["Message-ID"] and message["Date"]
    assert mail.rcpt_tos == ["quality@example.com", "工程部@example.com"]
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None and rich is not None
    assert f"raised: NC-00001 {TITLE} #1" in plain.get_content()
    assert rich.get_content().startswith("<pre>raised: NC-00000 " + TITLE)


def test_email_login_mechanism(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # smtplib speaks LOGIN with ASCII passwords only (non-ASCII ones go as UTF-8 PLAIN)
    server = MailReceiver(tmp_path, exclude=["PLAIN"], users={"patrol": "ascii-only"}).start()
    try:
        [outcome] = send(mail_channel(server, monkeypatch), notice())
    finally:
        server.stop()
    assert outcome.ok and server.messages[0].mechanism == "LOGIN"


def test_email_wrong_password_is_permanent(smtp: MailReceiver,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    [outcome] = send(mail_channel(smtp, monkeypatch, password="wrong"), notice())
    assert not outcome.ok and outcome.permanent and "535" in (outcome.error or "")
    assert "wrong" not in (outcome.error or "")
    assert smtp.attempts[0] == ("PLAIN", "patrol", False)  # smtplib tries LOGIN next
    assert not any(accepted for _, _, accepted in smtp.attempts) and smtp.messages == []


def test_email_never_sends_the_password_in_clear(smtp: MailReceiver,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    [outcome] = send(mail_channel(smtp, monkeypatch, starttls=False), notice())
    assert not outcome.ok and outcome.permanent and "AUTH" in (outcome.error or "")
    assert smtp.attempts == [] and smtp.messages == []


def test_email_untrusted_certificate_is_retried(smtps: MailReceiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    [outcome] = send(mail_channel(smtps, monkeypatch, ca_file=None), notice())
    assert not outcome.ok and not outcome.permanent
    assert "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
    assert smtps.attempts == [] and smtps.messages == []


# --- MQTT ---------------------------------------------------------------------------------

class Subscriber:
    """A paho client holding every message of one topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.arrived = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.connect(MOSQUITTO[0], port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        with self.arrived:
            self.messages.append(message)
            self.arrived.notify_all()

    def wait(self, count: int) -> list[mqtt.MQTTMessage]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.messages) >= count, 10), \
                f"{len(self.messages)} of {count} messages arrived"
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_send(site: MqttConfig, channel: Channel, notices: list[Notice],
              between: Callable[[], None] = lambda: None) -> tuple[list[Outcome], MqttSender]:
    async def run() -> tuple[list[Outcome], MqttSender]:
        sender = MqttSender(channel, render, site, timeout=5)
        try:
            outcomes = []
            for item in notices:
                outcomes.append(await sender.send(item))
                await asyncio.to_thread(between)
            return outcomes, sender
        finally:
            await sender.close()

    return asyncio.run(run())


def test_mqtt_publishes_the_document(no_threads_left: None) -> None:
    topic = f"patrol-test/{uuid.uuid4().hex}/alerts"
    subscriber = Subscriber(MOSQUITTO[1], topic)
    site = MqttConfig(url=f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}",
                      client_id=f"t-{uuid.uuid4().hex[:8]}")
    channel = Channel(name="siren", kind="mqtt", topic=topic)
    try:
        outcomes, sender = mqtt_send(site, channel, [notice(2), notice(1, "minor")])
        first, second = subscriber.wait(2)
    finally:
        subscriber.close()
    assert outcomes == [Outcome(True)] * 2
    assert sender.client_id == f"{site.client_id}-notify"
    document = json.loads(first.payload)
    assert first.qos == 1 and not first.retain
    assert [e["nc"]["id"] for e in document["entries"]] == ["NC-00000", "NC-00001"]
    assert document["title"] == f"[generic] 2 不合格项 {TITLE}"
    assert json.loads(second.payload)["notice"]["severity"] == "minor"


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
def test_mqtt_reconnects_after_the_broker_comes_back(tmp_path: Path,
                                                     no_threads_left: None) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    topic = "plant/alerts"
    site = MqttConfig(url=broker.url)
    channel = Channel(name="siren", kind="mqtt", topic=topic)
    steps = iter([broker.stop, broker.start, lambda: None])
    try:
        outcomes, _ = mqtt_send(site, channel, [notice()] * 3, lambda: next(steps)())
    finally:
        broker.close()
    first, offline, again = outcomes
    assert first.ok and again.ok
    assert not offline.ok and not offline.permanent and str(broker.port) in (offline.error or "")


def test_an_mqtt_channel_needs_the_sites_broker() -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(ValueError, match="no mqtt: section"):
                make_sender(Channel(name="siren", kind="mqtt", topic="a/b"), render,
                            site_mqtt=None, http=http)

    asyncio.run(run())


def test_an_answer_quoting_the_url_is_scrubbed(receiver: WebhookReceiver,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key = uuid.uuid4().hex
    url = f"{receiver.url}/{key}?access_token={key}&sig=A1b2C3d4"
    receiver.answer(then=Answer(400, body=f"bad token in POST {url[7:]} ({key})".encode()))
    outcomes = send(webhook("generic", monkeypatch, url), notice())
    port_too_big = f"http://127.0.0.1:99999/x?access_token={key}"  # aiohttp quotes it
    outcomes += send(webhook("generic", monkeypatch, port_too_big), notice())
    assert [(o.ok, o.permanent) for o in outcomes] == [(False, True), (False, True)]
    assert "bad token" in (outcomes[0].error or "")
    assert key not in " ".join(o.error or "" for o in outcomes)
    assert "A1b2C3d4" not in (outcomes[0].error or "")
