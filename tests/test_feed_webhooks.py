"""The hand-off to trackers: the change feed (pull) and signed webhooks (push).

In process over SQLite and PostgreSQL, with the dispatcher running in the app's lifespan
and a real HTTP receiver that checks every signature with the `standardwebhooks` package.
Retries are made quick by moving a failed delivery's `next_attempt_at` to now (after
checking the backoff the dispatcher chose), never by sleeping in the test.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from api.auth import create_token
from api.background import mark_overdue
from api.store import Database, Delivery
from api.webhooks import SafeResolver, parse_allow
from rules.events import Event
from tests.fake_dns import FixedAnswers
from tests.integration.webhook_receiver import (  # noqa: F401 (fixtures)
    Answer,
    Received,
    WebhookReceiver,
    make_receiver_fixture,
    receiver_fixture,
)
from tests.test_api import NC_KEYS

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
STANDARD = {"title": "Chilled water supply temperature 6-8 degC", "clause": "O&M 4.2",
            "category": "equipment", "severity": "major", "department": "engineering",
            "rectify_within": 86400.0}
ROLE_OF = {"acknowledge": "engineer", "start": "engineer", "rectify": "engineer",
           "assign": "engineer", "verify": "quality", "cancel": "quality",
           "reopen": "quality"}

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 20, what: str = "it") -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s (last: {value!r})")
        time.sleep(0.05)


class Patrol:
    """The app under test: a token per role and the calls these tests make."""

    def __init__(self, client: TestClient, db: Database) -> None:
        self.client, self.db = client, db
        self._tokens: dict[str, str] = {}
        self._episodes = 0

    def headers(self, role: str) -> dict[str, str]:
        if role not in self._tokens:
            with self.db.session() as session:
                self._tokens[role] = create_token(session, name=f"{role}-1", role=role)
        return {"Authorization": f"Bearer {self._tokens[role]}"}

    def event(self, kind: str = "violation_started", *, site: str = "tower-a",
              asset: str = "CH-1", standard: str = "HVAC-CHW-SUPPLY",
              start: datetime | None = None, at: datetime | None = None,
              **info: Any) -> dict[str, Any]:
        if start is None:  # a new episode, recent enough not to be overdue in a day
            self._episodes += 1
            start = datetime.now(UTC) - HOUR + self._episodes * timedelta(milliseconds=1)
        return Event(type=kind, site_id=site, asset_id=asset, standard_id=standard,  # type: ignore[arg-type]
                     standard_version=1, metric="chw_supply_temp",
                     episode_start=start.timestamp(), at=(at or start).timestamp(),
                     value=9.4, limit={"min": 6, "max": 8},
                     standard={**STANDARD, **info}).to_dict()

    def post_events(self, *events: dict[str, Any]) -> None:
        response = self.client.post("/api/v1/events", json={"events": list(events)},
                                    headers=self.headers("agent"))
        assert response.status_code == 200, response.text

    def raise_nc(self, *, site: str = "tower-a", asset: str = "CH-1",
                 standard: str = "HVAC-CHW-SUPPLY", **info: Any) -> str:
        """Open an NC (or add an occurrence to the open one); returns its id."""
        self.post_events(self.event(site=site, asset=asset, standard=standard, **info))
        response = self.client.get("/api/v1/nonconformances", headers=self.headers("tracker"),
                                   params={"site_id": site, "asset_id": asset,
                                           "standard_id": standard})
        open_ones = [nc for nc in response.json()["items"] if nc["state"] not in
                     ("closed", "cancelled")]
        assert len(open_ones) == 1, response.text
        return open_ones[0]["id"]

    def act(self, nc_id: str, verb: str, role: str | None = None, **body: Any
            ) -> dict[str, Any]:
        response = self.client.post(f"/api/v1/nonconformances/{nc_id}/{verb}", json=body,
                                    headers=self.headers(role or ROLE_OF[verb]))
        assert response.status_code == 200, response.text
        return response.json()

    def feed(self, role: str = "tracker", **params: Any) -> dict[str, Any]:
        response = self.client.get("/api/v1/feed", params=params, headers=self.headers(role))
        assert response.status_code == 200, response.text
        return response.json()

    def all_events(self, **params: Any) -> list[dict[str, Any]]:
        return self.feed(limit=1000, **params)["events"]

    def last_seq(self) -> int:
        events = self.all_events()
        return events[-1]["seq"] if events else 0

    def add_webhook(self, url: str, **body: Any) -> dict[str, Any]:
        response = self.client.post("/api/v1/webhooks", json={"url": url, **body},
                                    headers=self.headers("admin"))
        assert response.status_code == 201, response.text
        return response.json()

    def hook_to(self, receiver: WebhookReceiver, **body: Any) -> int:
        """Register `receiver` and give it the generated secret; returns the webhook id."""
        created = self.add_webhook(receiver.url, **body)
        receiver.secret = created["secret"]
        return created["id"]

    def webhook(self, hook_id: int) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/webhooks/{hook_id}", headers=self.headers("admin"))
        assert response.status_code == 200, response.text
        return response.json()

    def deliveries(self, hook_id: int, **params: Any) -> list[dict[str, Any]]:
        response = self.client.get(f"/api/v1/webhooks/{hook_id}/deliveries", params=params,
                                   headers=self.headers("admin"))
        assert response.status_code == 200, response.text
        return response.json()

    def delivery(self, hook_id: int, seq: int) -> dict[str, Any]:
        [one] = [d for d in self.deliveries(hook_id) if d["seq"] == seq]
        return one

    def retry_now(self, delivery_id: int) -> None:
        """Bring a failed delivery's next attempt forward to now: time passes in a test."""
        with self.db.write() as session:
            session.execute(update(Delivery).where(Delivery.id == delivery_id,
                                                   Delivery.status == "pending")
                            .values(next_attempt_at=datetime.now(UTC)))
            session.commit()


@pytest.fixture
def patrol(db: Database) -> Iterator[Patrol]:
    """The API with its dispatcher; the receivers listen on loopback, which it may reach."""
    with TestClient(create_app(db, jobs=True, webhooks_allow=["127.0.0.0/8"])) as client:
        yield Patrol(client, db)


def by_nc(received: list[Received]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for request in received:
        out.setdefault(request.nc_id, []).append(request.seq)
    return out


# --- the feed -------------------------------------------------------------------------


def test_every_change_is_a_feed_event_in_order_with_the_whole_nc(patrol: Patrol,
                                                                  db: Database) -> None:
    first = patrol.raise_nc()
    assert patrol.raise_nc() == first  # a new episode while open: an occurrence
    patrol.act(first, "acknowledge")
    patrol.act(first, "assign", assignee="li.wei")
    patrol.act(first, "start")
    patrol.act(first, "rectify", action="replaced the valve")
    patrol.act(first, "verify", result="pass")
    patrol.act(first, "reopen", reason="it came back")
    patrol.act(first, "cancel", reason="sensor fault")
    transient = patrol.raise_nc(asset="CH-2", on_recovery="close")
    patrol.post_events(patrol.event("violation_cleared", asset="CH-2",
                                    start=NOW - 10 * HOUR, at=NOW - 9 * HOUR,
                                    on_recovery="close"))
    late = patrol.raise_nc(asset="CH-3", rectify_within=60.0)  # due an hour ago
    mark_overdue(db.write)  # the job's pass, now rather than within 15 s

    events = eventually(lambda: (es := patrol.all_events())[-1]["type"] == "overdue" and es)
    assert [(e["nc"]["id"], e["type"]) for e in events] == [
        (first, "raised"), (first, "occurrence"), (first, "acknowledged"),
        (first, "assigned"), (first, "started"), (first, "rectified"), (first, "verified"),
        (first, "reopened"), (first, "cancelled"),
        (transient, "raised"), (transient, "closed"),
        (late, "raised"), (late, "overdue"),
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(set(e["nc"]) == NC_KEYS for e in events)
    # each event carries the NC as that change left it
    assert [e["nc"]["state"] for e in events[:9]] == [
        "open", "open", "acknowledged", "acknowledged", "rectifying", "pending_verification",
        "closed", "open", "cancelled"]
    assert events[1]["nc"]["occurrences"] == 2 and events[3]["nc"]["assignee"] == "li.wei"
    assert events[12]["nc"]["overdue"] is True
    assert all(e["at"].endswith("Z") for e in events)


def test_a_refused_action_writes_no_feed_event(patrol: Patrol) -> None:
    nc = patrol.raise_nc()
    before = patrol.last_seq()
    response = patrol.client.post(f"/api/v1/nonconformances/{nc}/verify",
                                  json={"result": "pass"}, headers=patrol.headers("quality"))
    assert response.status_code == 409
    assert patrol.feed(after=before) == {"events": [], "next": before}


def test_the_feed_pages_by_limit_and_next_checkpoint(patrol: Patrol) -> None:
    for asset in ("CH-1", "CH-2", "CH-3", "CH-4", "CH-5", "CH-6", "CH-7"):
        patrol.raise_nc(asset=asset)
    everything = [e["seq"] for e in patrol.all_events()]
    pages, after = [], 0
    while True:
        page = patrol.feed(after=after, limit=3)
        if not page["events"]:
            assert page["next"] == after  # nothing new: the checkpoint stays
            break
        pages.append([e["seq"] for e in page["events"]])
        assert page["next"] == pages[-1][-1]
        after = page["next"]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [seq for page in pages for seq in page] == everything


def test_the_feed_filters_by_site(patrol: Patrol) -> None:
    patrol.raise_nc(site="tower-a")
    b1 = patrol.raise_nc(site="tower-b")
    patrol.raise_nc(site="tower-a", asset="CH-2")
    patrol.act(b1, "acknowledge")
    only_b = patrol.feed(site_id="tower-b")
    assert [(e["nc"]["id"], e["type"]) for e in only_b["events"]] == [
        (b1, "raised"), (b1, "acknowledged")]
    assert {e["nc"]["site_id"] for e in only_b["events"]} == {"tower-b"}
    assert only_b["next"] == only_b["events"][-1]["seq"]
    assert patrol.feed(site_id="tower-c") == {"events": [], "next": 0}


def test_a_long_poll_returns_as_soon_as_a_change_arrives(patrol: Patrol) -> None:
    patrol.raise_nc()
    after = patrol.last_seq()
    answer: dict[str, Any] = {}

    def wait() -> None:
        answer["feed"] = patrol.feed(after=after, wait="10s")
        answer["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)  # let the request reach its wait; it must still be waiting:
    assert waiter.is_alive(), answer
    changed_at = time.monotonic()
    nc = patrol.raise_nc(asset="CH-2")
    waiter.join(10)
    assert not waiter.is_alive()
    assert answer["at"] - changed_at < 2.0
    assert [(e["nc"]["id"], e["type"]) for e in answer["feed"]["events"]] == [(nc, "raised")]


def test_a_long_poll_with_nothing_new_returns_empty_after_the_wait(patrol: Patrol) -> None:
    patrol.raise_nc()
    after = patrol.last_seq()
    started = time.monotonic()
    assert patrol.feed(after=after, wait="1s") == {"events": [], "next": after}
    assert 0.9 <= time.monotonic() - started < 5


@pytest.mark.parametrize("wait", ["soon", "-1s", "10 parsecs", "1e9x"])
def test_a_bad_wait_is_400(patrol: Patrol, wait: str) -> None:
    response = patrol.client.get("/api/v1/feed", params={"wait": wait},
                                 headers=patrol.headers("tracker"))
    assert response.status_code == 400, response.text
    assert "duration" in response.json()["detail"]


@pytest.mark.parametrize(("role", "status"), [("tracker", 200), ("admin", 200),
                                              ("engineer", 403), ("quality", 403),
                                              ("agent", 403), (None, 401)])
def test_the_feed_is_for_trackers(patrol: Patrol, role: str | None, status: int) -> None:
    headers = patrol.headers(role) if role else {}
    assert patrol.client.get("/api/v1/feed", headers=headers).status_code == status


def test_external_ref_appears_in_later_events_and_makes_none_itself(patrol: Patrol) -> None:
    nc = patrol.raise_nc()
    after = patrol.last_seq()
    response = patrol.client.put(f"/api/v1/nonconformances/{nc}/external_ref",
                                 json={"external_ref": "JIRA-42"},
                                 headers=patrol.headers("tracker"))
    assert response.status_code == 200 and response.json()["external_ref"] == "JIRA-42"
    assert patrol.feed(after=after) == {"events": [], "next": after}  # the tracker's own write
    history = patrol.client.get(f"/api/v1/nonconformances/{nc}/history",
                                headers=patrol.headers("tracker")).json()["items"]
    assert history[-1]["action"] == "external_ref"
    assert history[-1]["changes"] == {"external_ref": [None, "JIRA-42"]}

    patrol.act(nc, "acknowledge")
    [event] = patrol.feed(after=after)["events"]
    assert event["type"] == "acknowledged" and event["nc"]["external_ref"] == "JIRA-42"


@pytest.mark.parametrize(("role", "status"), [("engineer", 403), ("quality", 403),
                                              (None, 401)])
def test_only_a_tracker_sets_external_ref(patrol: Patrol, role: str | None, status: int
                                          ) -> None:
    nc = patrol.raise_nc()
    response = patrol.client.put(f"/api/v1/nonconformances/{nc}/external_ref",
                                 json={"external_ref": "JIRA-1"},
                                 headers=patrol.headers(role) if role else {})
    assert response.status_code == status
    unknown = patrol.client.put("/api/v1/nonconformances/NC-999999/external_ref",
                                json={"external_ref": "JIRA-1"},
                                headers=patrol.headers("tracker"))
    assert unknown.status_code == 404


# --- webhook endpoints ----------------------------------------------------------------


def test_webhook_crud_and_a_generated_secret_shown_once(patrol: Patrol) -> None:
    admin = patrol.headers("admin")
    created = patrol.add_webhook("http://127.0.0.1:9/hook", event_types=["raised"])
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert created["event_types"] == ["raised"] and created["disabled_at"] is None

    listed = patrol.client.get("/api/v1/webhooks", headers=admin).json()
    assert [h["id"] for h in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in patrol.webhook(created["id"])

    own = "whsec_" + base64.b64encode(b"k" * 32).decode()
    assert patrol.add_webhook("http://127.0.0.1:9/other", secret=own)["secret"] == own
    bad = patrol.client.post("/api/v1/webhooks", headers=admin,
                             json={"url": "http://127.0.0.1:9/", "secret": "hunter2"})
    assert bad.status_code == 422

    assert patrol.client.delete(f"/api/v1/webhooks/{created['id']}",
                                headers=admin).status_code == 204
    assert patrol.client.get(f"/api/v1/webhooks/{created['id']}",
                             headers=admin).status_code == 404
    assert patrol.client.delete(f"/api/v1/webhooks/{created['id']}",
                                headers=admin).status_code == 404
    assert created["id"] not in [h["id"] for h in
                                 patrol.client.get("/api/v1/webhooks", headers=admin).json()]


@pytest.mark.parametrize(("role", "status"), [("tracker", 403), ("quality", 403),
                                              (None, 401)])
def test_webhooks_are_for_admins(patrol: Patrol, role: str | None, status: int) -> None:
    headers = patrol.headers(role) if role else {}
    assert patrol.client.get("/api/v1/webhooks", headers=headers).status_code == status
    assert patrol.client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/"},
                              headers=headers).status_code == status


UNSAFE = ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/hook",
          "http://100.100.100.200/", "http://[fd00:ec2::254]/",
          "http://[::ffff:169.254.169.254]/latest/meta-data/"]


@pytest.mark.parametrize("url", [*UNSAFE, "ftp://127.0.0.1/hook", "http:///nohost"])
def test_unsafe_webhook_urls_are_refused(patrol: Patrol, url: str) -> None:
    response = patrol.client.post("/api/v1/webhooks", json={"url": url},
                                  headers=patrol.headers("admin"))
    assert response.status_code == 422, response.text
    assert patrol.client.get("/api/v1/webhooks",
                             headers=patrol.headers("admin")).json() == []


@pytest.mark.parametrize("url", UNSAFE)
def test_unsafe_urls_are_accepted_when_the_config_allows_them(db: Database, url: str) -> None:
    with TestClient(create_app(db, webhooks_allow_private=True)) as client:
        patrol = Patrol(client, db)
        assert patrol.add_webhook(url)["url"] == url


# --- deliveries -----------------------------------------------------------------------


def test_every_event_is_delivered_signed_and_in_order(patrol: Patrol,
                                                      receiver: WebhookReceiver) -> None:
    patrol.raise_nc(asset="OLD")  # before the webhook: not sent
    delivered_before = delivered_metric(patrol)
    hook = patrol.hook_to(receiver)
    one, two = patrol.raise_nc(), patrol.raise_nc(asset="CH-2")
    patrol.act(one, "acknowledge")
    patrol.act(two, "assign", assignee="li.wei")
    patrol.act(one, "rectify", action="new valve")
    patrol.client.put(f"/api/v1/nonconformances/{two}/external_ref",
                      json={"external_ref": "JIRA-7"}, headers=patrol.headers("tracker"))
    patrol.act(two, "acknowledge")
    expected = [e for e in patrol.all_events() if e["nc"]["asset_id"] != "OLD"]
    assert len(expected) == 6

    got = receiver.wait_until(lambda r: len(r) >= len(expected), what="6 deliveries")
    assert all(r.verified for r in got), [r.error for r in got]
    assert sorted(r.seq for r in got) == [e["seq"] for e in expected]
    assert {r.webhook_id for r in got} == {f"msg_{e['seq']}_{hook}" for e in expected}
    for nc_seqs in by_nc(got).values():
        assert nc_seqs == sorted(nc_seqs)
    first = got[0]
    assert first.headers["content-type"] == "application/json"
    assert first.headers["webhook-signature"].startswith("v1,")
    assert abs(int(first.headers["webhook-timestamp"]) - time.time()) < 60
    by_seq = {r.seq: r.payload for r in got}
    for event in expected:
        body = by_seq[event["seq"]]
        assert body["type"] == f"nonconformance.{event['type']}"
        assert body["data"] == {"seq": event["seq"], "type": event["type"], "nc": event["nc"]}
        assert body["timestamp"] == event["at"]
    assert by_seq[expected[-1]["seq"]]["data"]["nc"]["external_ref"] == "JIRA-7"
    settled = eventually(lambda: (ds := patrol.deliveries(hook))
                         and all(d["status"] == "delivered" for d in ds) and ds)
    assert {(d["attempts"], d["last_status"]) for d in settled} == {(1, 200)}
    assert delivered_metric(patrol) == delivered_before + 6  # GET /metrics counts them


def delivered_metric(patrol: Patrol) -> float:
    """`patrol_webhook_deliveries_total{outcome="delivered"}` on the API's /metrics."""
    page = patrol.client.get("/metrics", headers=patrol.headers("tracker"))
    assert page.status_code == 200, page.text
    found = re.search(r'^patrol_webhook_deliveries_total\{outcome="delivered"\} (\S+)$',
                      page.text, re.M)
    return float(found.group(1)) if found else 0.0


def test_retries_keep_the_webhook_id_back_off_and_honour_retry_after(
        patrol: Patrol, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="patrol.api.webhooks")
    receiver.answer(Answer(500), Answer(500), Answer(429, {"Retry-After": "1"}))
    hook = patrol.hook_to(receiver)
    patrol.raise_nc()
    seq = patrol.last_seq()

    for attempt, (low, high) in ((1, (3.75, 6.25)), (2, (7.5, 12.5))):
        got = receiver.wait_until(lambda r, n=attempt: len(r) >= n, what=f"attempt {attempt}")
        failed = eventually(lambda n=attempt: (d := patrol.delivery(hook, seq))["attempts"] == n
                            and d, what=f"attempt {attempt} settled")
        assert failed["status"] == "pending" and failed["last_status"] == 500
        wait = datetime.fromisoformat(failed["next_attempt_at"]).timestamp() - got[-1].wall
        assert low - 0.5 <= wait <= high + 0.5, wait  # exponential, with jitter
        patrol.retry_now(failed["id"])

    got = receiver.wait_until(lambda r: len(r) >= 4, what="the attempt after Retry-After")
    assert [r.status for r in got] == [500, 500, 429, 200]
    assert got[3].at - got[2].at >= 0.9  # Retry-After: 1 was honoured
    assert {r.webhook_id for r in got} == {f"msg_{seq}_{hook}"}  # the same id every time
    assert all(r.verified for r in got), [r.error for r in got]
    done = eventually(lambda: (d := patrol.delivery(hook, seq))["status"] == "delivered" and d)
    assert done["attempts"] == 4 and done["last_status"] == 200
    assert done["delivered_at"] is not None and done["last_error"] is None
    said = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "patrol.api.webhooks" and f"webhook {hook}:" in r.getMessage()]
    # one warning for the failing spell, the repeats at DEBUG, one line when it ends
    assert [level for level, _ in said] == ["WARNING", "DEBUG", "DEBUG", "INFO"], said
    assert "answered 500" in said[0][1] and said[-1][1] == f"webhook {hook}: delivering again"


def test_a_failing_nc_holds_back_its_own_later_events_only(patrol: Patrol,
                                                           receiver: WebhookReceiver) -> None:
    stuck = {"CH-A"}
    receiver.rule = lambda r: Answer(500) if r.asset_id in stuck else None
    hook = patrol.hook_to(receiver)
    a = patrol.raise_nc(asset="CH-A")
    b = patrol.raise_nc(asset="CH-B")
    patrol.act(a, "acknowledge")
    patrol.act(b, "acknowledge")
    patrol.act(a, "assign", assignee="li.wei")
    patrol.act(b, "assign", assignee="li.wei")

    # B's three events pass while A's first one keeps failing; A's later ones wait
    receiver.wait_until(lambda r: len([x for x in r if x.nc_id == b and x.status == 200]) == 3,
                        what="B's events")
    a_seqs = [e["seq"] for e in patrol.all_events() if e["nc"]["id"] == a]
    eventually(lambda: patrol.delivery(hook, a_seqs[0])["attempts"] >= 1)
    assert {r.seq for r in receiver.received if r.nc_id == a} == {a_seqs[0]}
    assert {d["status"] for d in patrol.deliveries(hook) if d["seq"] in a_seqs[1:]} == {
        "pending"}

    stuck.clear()
    patrol.retry_now(patrol.delivery(hook, a_seqs[0])["id"])
    receiver.wait_until(lambda r: len([x for x in r if x.nc_id == a and x.status == 200]) == 3,
                        what="A's events after the receiver recovered")
    delivered = by_nc(receiver.delivered())
    assert delivered[a] == a_seqs and delivered[b] == sorted(delivered[b])
    # no later event of A was even attempted before the earlier one was delivered
    attempts_of_a = [r.seq for r in receiver.received if r.nc_id == a]
    assert attempts_of_a == sorted(attempts_of_a)


def test_event_types_and_site_filter_what_a_webhook_gets(
        patrol: Patrol, make_receiver: Callable[[], WebhookReceiver]) -> None:
    everything, some, site_b = make_receiver(), make_receiver(), make_receiver()
    all_hook = patrol.hook_to(everything)
    some_hook = patrol.hook_to(some, event_types=["raised", "cancelled"])
    b_hook = patrol.hook_to(site_b, site_id="tower-b")
    nc = patrol.raise_nc()
    patrol.act(nc, "acknowledge")
    patrol.act(nc, "cancel", reason="false positive")
    other = patrol.raise_nc(site="tower-b")
    patrol.act(other, "acknowledge")
    events = patrol.all_events()

    everything.wait_until(lambda r: len(r) == len(events), what="every event")
    wanted = [e["seq"] for e in events if e["type"] in ("raised", "cancelled")]
    some.wait_until(lambda r: len(r) == len(wanted), what="raised and cancelled")
    site_b.wait_until(lambda r: len(r) == 2, what="tower-b's events")
    # every delivery of the others exists by now: the filters made no others
    assert sorted(d["seq"] for d in patrol.deliveries(some_hook)) == wanted
    assert {r.type for r in some.received} == {"raised", "cancelled"}
    assert [d["seq"] for d in patrol.deliveries(b_hook)] == [
        e["seq"] for e in reversed(events) if e["nc"]["site_id"] == "tower-b"]
    assert len(patrol.deliveries(all_hook)) == len(events)


def test_410_disables_the_webhook_and_stops_its_deliveries(
        patrol: Patrol, make_receiver: Callable[[], WebhookReceiver]) -> None:
    gone, witness = make_receiver(), make_receiver()
    gone.answer(then=Answer(410))
    hook = patrol.hook_to(gone)
    nc = patrol.raise_nc()
    gone.wait_until(lambda r: len(r) == 1, what="the 410")
    disabled = eventually(lambda: (h := patrol.webhook(hook))["disabled_at"] and h)
    assert "410" in disabled["disabled_reason"]
    [dead] = patrol.deliveries(hook)
    assert dead["status"] == "dead" and dead["last_status"] == 410 and dead["attempts"] == 1

    # a later change reaches a healthy webhook, and nothing more goes to the gone one
    patrol.hook_to(witness)
    patrol.act(nc, "acknowledge")
    witness.wait_until(lambda r: len(r) == 1, what="the witness's delivery")
    assert len(gone.received) == 1
    assert len(patrol.deliveries(hook)) == 1


def test_a_disabled_webhook_enabled_again_gets_what_it_missed_in_order(
        patrol: Patrol, make_receiver: Callable[[], WebhookReceiver]) -> None:
    receiver = make_receiver()
    receiver.answer(Answer(410))  # once: the receiver was gone, then it comes back
    hook = patrol.hook_to(receiver)
    nc = patrol.raise_nc()
    eventually(lambda: patrol.webhook(hook)["disabled_at"], what="the 410 to disable it")
    patrol.act(nc, "acknowledge")  # while disabled: not sent
    patrol.act(nc, "assign", assignee="li.wei")
    time.sleep(1.5)
    assert len(receiver.received) == 1

    admin = patrol.headers("admin")
    assert patrol.client.post(f"/api/v1/webhooks/{hook}/enable",
                              headers=patrol.headers("engineer")).status_code == 403
    assert patrol.client.post("/api/v1/webhooks/999/enable", headers=admin).status_code == 404
    response = patrol.client.post(f"/api/v1/webhooks/{hook}/enable", headers=admin)
    assert response.status_code == 200 and response.json()["disabled_at"] is None
    got = receiver.wait_until(lambda r: len([x for x in r if x.status == 200]) == 3,
                              what="the three changes after enabling")
    delivered = [x.type for x in got if x.status == 200]
    assert delivered == ["raised", "acknowledged", "assigned"]  # the refused one, then the rest
    assert all(x.verified for x in got)
    eventually(lambda: all(d["status"] == "delivered" for d in patrol.deliveries(hook)))


def test_deliveries_are_listed_and_a_delivered_one_can_be_sent_again(
        patrol: Patrol, make_receiver: Callable[[], WebhookReceiver]) -> None:
    receiver, other = make_receiver(), make_receiver()
    receiver.answer(Answer(503, {"Retry-After": "0"}))
    hook, other_hook = patrol.hook_to(receiver), patrol.hook_to(other)
    nc = patrol.raise_nc()
    patrol.act(nc, "acknowledge")
    receiver.wait_until(lambda r: len([x for x in r if x.status == 200]) == 2, what="two")
    listed = eventually(lambda: (ds := patrol.deliveries(hook))
                        and all(d["status"] == "delivered" for d in ds) and ds)
    assert [d["seq"] for d in listed] == sorted((d["seq"] for d in listed), reverse=True)
    raised = listed[-1]
    assert raised["attempts"] == 2 and raised["last_status"] == 200
    assert len(patrol.deliveries(hook, status="delivered")) == 2
    assert patrol.deliveries(hook, status="pending") == []

    admin = patrol.headers("admin")
    response = patrol.client.post(
        f"/api/v1/webhooks/{hook}/deliveries/{raised['id']}/redeliver", headers=admin)
    assert response.status_code == 202 and response.json()["status"] == "pending"
    again = receiver.wait_until(lambda r: len(r) == 4, what="the redelivery")[-1]
    assert again.webhook_id == raised["message_id"] == f"msg_{raised['seq']}_{hook}"
    assert again.verified and again.status == 200
    eventually(lambda: patrol.delivery(hook, raised["seq"])["attempts"] == 3)

    missing = patrol.client.post(f"/api/v1/webhooks/{hook}/deliveries/999999/redeliver",
                                 headers=admin)
    foreign = patrol.deliveries(other_hook)[0]["id"]
    crossed = patrol.client.post(f"/api/v1/webhooks/{hook}/deliveries/{foreign}/redeliver",
                                 headers=admin)
    assert missing.status_code == 404 and crossed.status_code == 404
    assert patrol.client.get("/api/v1/webhooks/999/deliveries",
                             headers=admin).status_code == 404


def test_a_secret_without_base64_padding_signs_as_standard_webhooks_reads_it(
        patrol: Patrol, receiver: WebhookReceiver) -> None:
    """The reference library accepts an unpadded secret; so must the sender, or every
    delivery of that webhook fails before it is sent and is never given up."""
    unpadded = "whsec_" + base64.b64encode(b"k" * 32).decode().rstrip("=")
    receiver.secret = patrol.add_webhook(receiver.url, secret=unpadded)["secret"]
    patrol.raise_nc()
    [got] = receiver.wait_until(lambda r: len(r) == 1, timeout=10, what="the delivery")
    assert got.verified, got.error


@pytest.mark.parametrize("secret", ["whsec_" + "A" * 33, "whsec_" + "A" * 37 + "=="])
def test_a_secret_that_is_not_base64_is_422(patrol: Patrol, secret: str) -> None:
    response = patrol.client.post("/api/v1/webhooks", headers=patrol.headers("admin"),
                                  json={"url": "http://127.0.0.1:9/", "secret": secret})
    assert response.status_code == 422, response.text


def test_deliveries_never_connect_to_a_metadata_address_a_name_resolves_to_later() -> None:
    """DNS rebinding: the name was safe when checked; at connect time it is not."""
    async def resolve(resolver: SafeResolver, host: str) -> list[str]:
        return [answer["host"] for answer in await resolver.resolve(host, 80)]

    mixed = SafeResolver(FixedAnswers("169.254.169.254", "203.0.113.7", "fd00:ec2::254"))
    assert asyncio.run(resolve(mixed, "hooks.example")) == ["203.0.113.7"]
    for bad in ("169.254.169.254", "::ffff:169.254.169.254", "100.100.100.200", "fe80::1"):
        with pytest.raises(OSError, match=r"metadata|link-local"):
            asyncio.run(resolve(SafeResolver(FixedAnswers(bad)), "rebound.example"))

    async def real() -> list[str]:  # aiohttp's own resolver wants a running loop
        return await resolve(SafeResolver(allow=parse_allow(["127.0.0.0/8"])), "localhost")

    assert "127.0.0.1" in asyncio.run(real())


# --- the sending edge: Retry-After, redirects, URLs in logs ---------------------------


def test_retry_after_zero_gets_a_handful_of_attempts_not_a_flood(
        patrol: Patrol, receiver: WebhookReceiver) -> None:
    receiver.answer(then=Answer(429, {"Retry-After": "0"}))
    hook = patrol.hook_to(receiver)
    patrol.raise_nc()
    receiver.wait_until(lambda r: len(r) >= 1, what="the first attempt")
    time.sleep(3)
    # floored at 1 s (plus up to 25 % jitter): about 3 in 3 s; it was a busy loop
    assert 1 <= len(receiver.received) <= 5, len(receiver.received)
    [delivery] = patrol.deliveries(hook)
    assert delivery["status"] == "pending" and delivery["last_status"] == 429


def test_a_redirect_is_not_followed_and_is_retried(
        patrol: Patrol, make_receiver: Callable[[], WebhookReceiver]) -> None:
    receiver, elsewhere = make_receiver(), make_receiver()
    receiver.answer(then=Answer(302, {"Location": f"{elsewhere.url}?key=stolen"}))
    hook = patrol.hook_to(receiver)
    patrol.raise_nc()
    receiver.wait_until(lambda r: len(r) >= 1, what="the first attempt")
    failed = eventually(lambda: (d := patrol.deliveries(hook)[0])["attempts"] and d)
    assert failed["status"] == "pending" and failed["last_status"] == 302
    assert failed["last_error"] == (f"a redirect to http://127.0.0.1:{elsewhere.port}: "
                                    "not followed")
    assert elsewhere.received == []


def test_logs_show_a_webhook_url_without_its_key(
        patrol: Patrol, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    key = "d3b07384d113edec49eaa6238ad5ff00"
    receiver.answer(then=Answer(410))
    created = patrol.add_webhook(f"http://127.0.0.1:{receiver.port}/robot/{key}/send"
                                 f"?access_token={key}")
    receiver.secret = created["secret"]
    with caplog.at_level(logging.INFO, logger="patrol.api.webhooks"):
        patrol.raise_nc()
        eventually(lambda: patrol.webhook(created["id"])["disabled_at"])
    said = [r.getMessage() for r in caplog.records if r.name == "patrol.api.webhooks"]
    assert f"http://127.0.0.1:{receiver.port}/robot/***/send answered 410" in " ".join(said)
    assert not [m for m in said if key in m]
