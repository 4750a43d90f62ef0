"""Silences, the notification log and alert links (SPEC 7.2), over the real app on SQLite
and PostgreSQL.

Silences: who may make and expire them, what a silence must say, which silence holds an
NC's notifications, and site scope (a scoped person silences only within their sites, and
another site's silence is 404). Notifications: rows written straight to the tables, read
back filtered and paged. Alert links: signing and verifying (expiry, tampering, another
key), and the page they open: GET shows the NC and a form and changes nothing; POST
acknowledges through the lifecycle with "via alert link"; a second POST, a bad or an
expired link answer a 4xx page that says why, in English or Chinese.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from api.app import create_app
from api.auth import Principal
from api.errors import Invalid
from api.notify import links, silences
from api.notify.config import NotifyConfig
from api.notify.dispatch import NotifySetup, SiteContext
from api.store import Database, FeedEvent, HistoryEntry, Notification, NotifyMessage, Setting
from tests.test_api import HOUR, NOW, Api, engine_event
from tests.test_scope import SITE_B, at_site, scoped

LATER = NOW + HOUR


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db, site_id="tower-a")) as client:
        yield Api(client, db)


def silence_body(**changes: Any) -> dict[str, Any]:
    return {"matchers": {"asset_id": ["CH-1"], "severity": "minor"}, "ends_at": iso(LATER),
            "comment": "replacing the sensor", **changes}


def post_silence(api: Api, headers: dict[str, str] | None = None,
                 **changes: Any) -> dict[str, Any]:
    response = api.client.post("/api/v1/silences", json=silence_body(**changes),
                               headers=headers or api.headers("engineer"))
    assert response.status_code == 201, response.text
    return response.json()


# --- silences ----------------------------------------------------------------------------


def test_an_engineer_silences_and_the_silence_says_what_and_who(api: Api) -> None:
    silence = post_silence(api)
    assert silence["matchers"] == {"asset_id": ["CH-1"], "severity": ["minor"]}
    assert silence["author"] == "engineer-token"
    assert silence["state"] == "active"
    assert silence["comment"] == "replacing the sensor"
    assert silence["expired_at"] is None
    assert datetime.fromisoformat(silence["ends_at"]) == LATER
    assert datetime.fromisoformat(silence["starts_at"]) >= NOW
    got = api.client.get(f"/api/v1/silences/{silence['id']}", headers=api.headers("tracker"))
    assert got.status_code == 200
    assert got.json() == silence


@pytest.mark.parametrize(("role", "status"), [
    ("engineer", 201), ("quality", 201), ("admin", 201), ("tracker", 403), ("agent", 403)])
def test_who_may_silence(api: Api, role: str, status: int) -> None:
    response = api.client.post("/api/v1/silences", json=silence_body(),
                               headers=api.headers(role))
    assert response.status_code == status, response.text
    listed = api.client.get("/api/v1/silences", headers=api.headers("tracker")).json()
    assert len(listed["items"]) == (1 if status == 201 else 0)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"matchers": {"room": ["B2"]}}, "room"),
    ({"matchers": {}}, "matchers"),
    ({"matchers": {"asset_id": []}}, "asset_id"),
    ({"matchers": {"asset_id": [""]}}, "asset_id"),
    ({"matchers": {"asset_id": [1]}}, "asset_id"),
    ({"ends_at": iso(NOW - HOUR)}, "not in the future"),
    ({"starts_at": iso(LATER + HOUR)}, "not after starts_at"),
    ({"ends_at": "2026-12-24T08:00:00"}, "time zone"),
    ({"comment": ""}, "comment"),
    ({"comment": "   "}, "comment"),
    ({"comment": None}, "comment"),
])
def test_a_silence_that_cannot_be_used_is_422_with_the_reason(
        api: Api, changes: dict[str, Any], reason: str) -> None:
    response = api.client.post("/api/v1/silences", json=silence_body(**changes),
                               headers=api.headers("engineer"))
    assert response.status_code == 422, response.text
    assert reason in response.text
    assert api.client.get("/api/v1/silences",
                          headers=api.headers("engineer")).json()["items"] == []


def test_expiring_keeps_the_silence_for_audit(api: Api) -> None:
    silence = post_silence(api)
    expired = api.client.delete(f"/api/v1/silences/{silence['id']}",
                                headers=api.headers("quality"))
    assert expired.status_code == 200, expired.text
    body = expired.json()
    assert body["state"] == "expired"
    assert body["expired_at"] is not None and body["ends_at"] == body["expired_at"]
    assert {k: v for k, v in body.items() if k not in ("state", "expired_at", "ends_at")} \
        == {k: v for k, v in silence.items() if k not in ("state", "expired_at", "ends_at")}
    again = api.client.delete(f"/api/v1/silences/{silence['id']}",
                              headers=api.headers("engineer"))
    assert again.status_code == 200
    assert again.json()["expired_at"] == body["expired_at"]  # the first expiry stands
    kept = api.client.get(f"/api/v1/silences/{silence['id']}", headers=api.headers("tracker"))
    assert kept.json() == body


@pytest.mark.parametrize("role", ["tracker", "agent"])
def test_only_those_who_silence_expire(api: Api, role: str) -> None:
    silence = post_silence(api)
    response = api.client.delete(f"/api/v1/silences/{silence['id']}",
                                 headers=api.headers(role))
    assert response.status_code == 403
    assert api.client.get(f"/api/v1/silences/{silence['id']}",
                          headers=api.headers(role)).json()["state"] == "active"


@pytest.mark.parametrize("path", ["/api/v1/silences/999", "/api/v1/silences/1"])
def test_an_unknown_silence_is_404(api: Api, path: str) -> None:
    assert api.client.get(path, headers=api.headers("tracker")).status_code == 404
    assert api.client.delete(path, headers=api.headers("admin")).status_code == 404


def test_silences_are_listed_by_state_newest_first_and_paged(api: Api) -> None:
    active = [post_silence(api, comment=f"active {n}")["id"] for n in range(3)]
    pending = post_silence(api, starts_at=iso(NOW + 2 * HOUR), ends_at=iso(NOW + 3 * HOUR),
                           comment="next shift")["id"]
    gone = post_silence(api, comment="done early")["id"]
    assert api.client.delete(f"/api/v1/silences/{gone}",
                             headers=api.headers("engineer")).status_code == 200

    def ids(state: str, limit: int = 100) -> list[int]:
        found, cursor = [], None
        for _ in range(20):
            params: dict[str, Any] = {"state": state, "limit": limit}
            if cursor:
                params["cursor"] = cursor
            response = api.client.get("/api/v1/silences", params=params,
                                      headers=api.headers("tracker"))
            assert response.status_code == 200, response.text
            found += [s["id"] for s in response.json()["items"]]
            cursor = response.json()["next_cursor"]
            if cursor is None:
                return found
        raise AssertionError("paging did not end")

    assert ids("active") == active[::-1]
    assert ids("pending") == [pending]
    assert ids("expired") == [gone]
    assert ids("all") == [gone, pending, *active[::-1]]
    assert ids("all", limit=2) == ids("all")
    assert api.client.get("/api/v1/silences", params={"cursor": "!!"},
                          headers=api.headers("tracker")).status_code == 400


def test_a_scoped_person_silences_only_within_their_sites(api: Api, db: Database) -> None:
    mine = scoped(db, "engineer", "tower-a")
    no_site = api.client.post("/api/v1/silences", json=silence_body(), headers=mine)
    assert no_site.status_code == 422
    assert "site_id" in no_site.json()["detail"]
    other = api.client.post("/api/v1/silences", headers=mine, json=silence_body(
        matchers={"site_id": ["tower-a", SITE_B]}))
    assert other.status_code == 403
    assert SITE_B in other.json()["detail"]
    ok = post_silence(api, mine, matchers={"site_id": "tower-a", "asset_id": "CH-1"})
    assert ok["matchers"] == {"site_id": ["tower-a"], "asset_id": ["CH-1"]}


def test_another_sites_silence_is_not_there_for_a_scoped_person(api: Api,
                                                                db: Database) -> None:
    theirs = post_silence(api, matchers={"site_id": SITE_B})["id"]
    everywhere = post_silence(api, matchers={"standard_id": "HVAC-CHW-SUPPLY"})["id"]
    ours = post_silence(api, matchers={"site_id": "tower-a"})["id"]
    mine = scoped(db, "quality", "tower-a")
    listed = api.client.get("/api/v1/silences", headers=mine).json()["items"]
    assert [s["id"] for s in listed] == [ours]
    for hidden in (theirs, everywhere):
        assert api.client.get(f"/api/v1/silences/{hidden}", headers=mine).status_code == 404
        assert api.client.delete(f"/api/v1/silences/{hidden}",
                                 headers=mine).status_code == 404
    assert api.client.get(f"/api/v1/silences/{theirs}",
                          headers=api.headers("tracker")).json()["state"] == "active"
    assert api.client.delete(f"/api/v1/silences/{ours}", headers=mine).status_code == 200


FIELDS = {"site_id": "tower-a", "asset_id": "CH-1", "asset_type": "chiller",
          "standard_id": "HVAC-CHW-SUPPLY", "standard_kind": "range", "severity": "minor",
          "department": "engineering", "category": "equipment"}


@pytest.mark.parametrize(("matchers", "holds"), [
    ({"asset_id": "CH-1"}, True),
    ({"asset_id": ["CH-2", "CH-1"], "severity": ["minor", "major"]}, True),
    ({"asset_id": "CH-1", "severity": "critical"}, False),
    ({"department": ["quality"]}, False),
    ({"site_id": "tower-a", "category": "equipment", "standard_kind": "range"}, True),
])
def test_a_silence_holds_when_every_matcher_matches(db: Database, matchers: dict[str, Any],
                                                   holds: bool) -> None:
    who = Principal(1, "ops", "engineer")
    with db.write() as session:
        made = silences.create(session, matchers, None, LATER, "works", who, NOW)
        session.commit()
        found = silences.active_silence(session, FIELDS, NOW + timedelta(minutes=1))
        assert (found is not None and found.id == made.id) is holds
        missing = {k: v for k, v in FIELDS.items() if k not in matchers}
        assert silences.active_silence(session, missing, NOW + timedelta(minutes=1)) is None


def test_only_a_silence_in_force_holds_and_the_oldest_is_named(db: Database) -> None:
    who = Principal(1, "ops", "engineer")
    with db.write() as session:
        later = silences.create(session, {"asset_id": "CH-1"}, NOW + 2 * HOUR,
                                NOW + 3 * HOUR, "next shift", who, NOW)
        first = silences.create(session, {"asset_id": "CH-1"}, None, LATER, "a", who, NOW)
        silences.create(session, {"severity": "minor"}, None, LATER, "b", who, NOW)
        session.commit()
        assert silences.active_silence(session, FIELDS, NOW).id == first.id
        assert silences.active_silence(session, FIELDS, LATER + HOUR).id == later.id
        assert silences.active_silence(session, FIELDS, NOW + 4 * HOUR) is None
        silences.expire(session, first.id, who, NOW + timedelta(minutes=1))
        session.commit()
        found = silences.active_silence(session, FIELDS, NOW + timedelta(minutes=2))
        assert found is not None and found.comment == "b"


# --- the notification log ----------------------------------------------------------------


@pytest.fixture
def logged(api: Api, db: Database) -> Api:
    """NC-000001 (tower-a) and NC-000002 (tower-b); six notifications, oldest first:
    id 1 NC-1 raised webhook sent (message 1), 2 NC-1 raised mail suppressed, 3 NC-2
    raised webhook pending, 4 NC-1 reminder webhook merged (message 2, a digest),
    5 NC-1 overdue mail failed (message 3), 6 NC-2 overdue webhook sent (message 4)."""
    api.apply(engine_event(asset="CH-1"), at_site(engine_event(asset="CH-2"), SITE_B))
    messages = [("webhook", "group", "sent", 1, NOW), ("webhook", "digest", "sent", 1, NOW),
                ("mail", "group", "failed", 5, None), ("webhook", "group", "sent", 2, NOW)]
    rows = [(1, "tower-a", "raised", "webhook", "sent", None, 1),
            (1, "tower-a", "raised", "mail", "suppressed", "silence 3: works", None),
            (2, SITE_B, "raised", "webhook", "pending", None, None),
            (1, "tower-a", "reminder", "webhook", "merged", "limit: 10 in 10m", 2),
            (1, "tower-a", "overdue", "mail", "failed", "550 no such user", 3),
            (2, SITE_B, "overdue", "webhook", "sent", None, 4)]
    with db.write() as session:
        session.execute(insert(NotifyMessage), [
            {"channel": channel, "group_key": "g", "kind": kind, "severity": "major",
             "status": status, "attempts": attempts, "next_attempt_at": NOW,
             "sent_at": sent, "last_error": "550 no such user" if status == "failed" else None}
            for channel, kind, status, attempts, sent in messages])
        session.execute(insert(Notification), [
            {"nc_pk": pk, "site_id": site, "event": event, "channel": channel, "route": 0,
             "group_key": "g", "severity": "major", "nc": {}, "status": status,
             "reason": reason, "message_id": message,
             "created_at": NOW + timedelta(minutes=n),
             "settled_at": None if status == "pending" else NOW + timedelta(minutes=n)}
            for n, (pk, site, event, channel, status, reason, message) in enumerate(rows)])
        session.commit()
    return api


def notifications(api: Api, headers: dict[str, str] | None = None,
                  **params: Any) -> list[dict[str, Any]]:
    response = api.client.get("/api/v1/notifications", params=params,
                              headers=headers or api.headers("tracker"))
    assert response.status_code == 200, response.text
    return response.json()["items"]


@pytest.mark.parametrize(("params", "ids"), [
    ({}, [6, 5, 4, 3, 2, 1]),
    ({"nc_id": "NC-000001"}, [5, 4, 2, 1]),
    ({"nc_id": "NC-000009"}, []),
    ({"channel": "mail"}, [5, 2]),
    ({"status": "suppressed"}, [2]),
    ({"status": "sent"}, [6, 1]),
    ({"event": "overdue"}, [6, 5]),
    ({"event": "reminder"}, [4]),
    ({"nc_id": "NC-000002", "channel": "webhook", "status": "sent"}, [6]),
])
def test_notifications_are_filtered_newest_first(logged: Api, params: dict[str, Any],
                                                 ids: list[int]) -> None:
    assert [n["id"] for n in notifications(logged, **params)] == ids


def test_a_notification_says_what_became_of_it_and_its_message(logged: Api) -> None:
    by_id = {n["id"]: n for n in notifications(logged)}
    failed = by_id[5]
    assert {k: failed[k] for k in ("nc_id", "site_id", "event", "channel", "route",
                                   "status", "reason")} == {
        "nc_id": "NC-000001", "site_id": "tower-a", "event": "overdue", "channel": "mail",
        "route": 0, "status": "failed", "reason": "550 no such user"}
    assert failed["message"] == {"id": 3, "kind": "group", "status": "failed",
                                 "attempts": 5, "sent_at": None,
                                 "last_error": "550 no such user"}
    assert by_id[4]["message"]["kind"] == "digest"
    assert by_id[2]["message"] is None and by_id[2]["reason"] == "silence 3: works"
    assert by_id[3]["settled_at"] is None


def test_notifications_are_paged_with_a_cursor(logged: Api) -> None:
    seen, cursor = [], None
    for _ in range(10):
        response = logged.client.get("/api/v1/notifications", headers=logged.headers(
            "engineer"), params={"limit": 4, **({"cursor": cursor} if cursor else {})})
        seen += [n["id"] for n in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1]


def test_a_scoped_reader_sees_its_sites_notifications(logged: Api, db: Database) -> None:
    mine = scoped(db, "tracker", "tower-a")
    assert [n["id"] for n in notifications(logged, mine)] == [5, 4, 2, 1]
    assert notifications(logged, mine, nc_id="NC-000002") == []


@pytest.mark.parametrize(("params", "status"), [
    ({"nc_id": "CH-1"}, 422), ({"status": "lost"}, 422), ({"event": "exploded"}, 422),
    ({"limit": 0}, 422), ({"cursor": "bm90IGEgY3Vyc29y"}, 400)])
def test_a_bad_notification_filter_is_refused(logged: Api, params: dict[str, Any],
                                              status: int) -> None:
    response = logged.client.get("/api/v1/notifications", params=params,
                                 headers=logged.headers("tracker"))
    assert response.status_code == status, response.text


def test_reading_notifications_and_silences_needs_a_token(api: Api) -> None:
    for path in ("/api/v1/notifications", "/api/v1/silences"):
        assert api.client.get(path).status_code == 401
    assert api.client.post("/api/v1/silences", json=silence_body()).status_code == 401


# --- signed links ------------------------------------------------------------------------

KEY = bytes(range(32))


def test_a_link_names_its_nc_and_action_until_it_expires() -> None:
    token = links.sign(KEY, 123, expires_at=NOW + HOUR)
    assert links.verify(KEY, token, NOW) == (123, "acknowledge")
    assert links.verify(KEY, token, NOW + HOUR - timedelta(seconds=1)) == (123, "acknowledge")
    with pytest.raises(links.LinkExpired, match="expired"):
        links.verify(KEY, token, NOW + HOUR)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", token)


def test_a_link_lasts_24_hours_by_default() -> None:
    token = links.sign(KEY, 7)
    now = datetime.now(UTC)
    assert links.verify(KEY, token, now + timedelta(hours=23)) == (7, "acknowledge")
    with pytest.raises(links.LinkExpired):
        links.verify(KEY, token, now + timedelta(hours=24, seconds=1))


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


@pytest.mark.parametrize("forge", [
    lambda t: _flip(t, 2),  # the payload changed: another NC, a later expiry
    lambda t: _flip(t, len(t) - 3),  # the signature changed
    lambda t: links.sign(bytes(32), 123, expires_at=NOW + HOUR),  # another server's key
    lambda t: t.split(".")[0] + "." + links.sign(KEY, 124).split(".")[1],  # spliced
], ids=["payload", "signature", "other-key", "spliced"])
def test_a_changed_or_forged_link_is_refused(forge: Any) -> None:
    token = links.sign(KEY, 123, expires_at=NOW + HOUR)
    with pytest.raises(links.BadLink, match="signature"):
        links.verify(KEY, forge(token), NOW)


@pytest.mark.parametrize("token", ["", "abc", ".", "abc.", ".abc", "a.b.c", "a" * 300,
                                   "MTIz.!!!", "x" * 20 + ".é"])
def test_a_malformed_link_is_refused(token: str) -> None:
    with pytest.raises(links.BadLink):
        links.verify(KEY, token, NOW)


def test_no_key_made_yet_means_no_genuine_link() -> None:
    with pytest.raises(links.BadLink):
        links.verify(None, links.sign(KEY, 1), NOW)


def test_the_ack_url_is_under_the_public_url() -> None:
    assert links.ack_url("https://patrol.example/", "t.s") == "https://patrol.example/ack/t.s"
    assert links.ack_url("https://x.example/patrol", "t.s") == "https://x.example/patrol/ack/t.s"


def test_the_signing_key_is_made_once_and_kept(db: Database) -> None:
    with db.session() as session:
        assert links.find_key(session) is None
    with db.write() as session:
        key = links.link_key(session)
        session.commit()
    assert len(key) == 32
    with db.write() as session:
        assert links.link_key(session) == key
        assert session.scalar(select(Setting.key)) == links.KEY_SETTING


def test_replicas_making_the_key_at_once_agree_on_one(db: Database) -> None:
    keys: list[bytes] = []
    first_made = threading.Event()

    def make(wait: bool) -> None:
        if wait:
            first_made.wait(10)
        with db.write() as session:
            keys.append(links.link_key(session))
            first_made.set()
            session.commit()

    threads = [threading.Thread(target=make, args=(n > 0,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(keys) == 4 and len(set(keys)) == 1
    with db.session() as session:
        assert links.find_key(session) == keys[0]


# --- the page behind a link --------------------------------------------------------------


class Page:
    """The app with NC-000001 open at tower-a, and links to it."""

    def __init__(self, client: TestClient, db: Database) -> None:
        self.client, self.db = client, db
        with db.write() as session:
            self.key = links.link_key(session)
            session.commit()

    def link(self, pk: int = 1, expires_at: datetime | None = None) -> str:
        return f"/ack/{links.sign(self.key, pk, expires_at=expires_at)}"

    def history(self, pk: int = 1) -> list[HistoryEntry]:
        with self.db.session() as session:
            return list(session.scalars(select(HistoryEntry).where(HistoryEntry.nc_pk == pk)
                                        .order_by(HistoryEntry.id)))

    def state(self, pk: int = 1) -> str:
        return self.history(pk)[-1].to_state or ""


@pytest.fixture
def page(db: Database) -> Iterator[Page]:
    with TestClient(create_app(db, site_id="tower-a")) as client:
        Api(client, db).apply(engine_event())
        yield Page(client, db)


def test_opening_a_link_shows_the_nc_and_the_form_and_changes_nothing(page: Page) -> None:
    response = page.client.get(page.link(), headers={"Accept-Language": "en"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    for shown in ("NC-000001", "Chilled water supply temperature 6-8 degC", "CH-1", "major",
                  "open", "Who is acknowledging?", '<form method="post">', 'name="name"'):
        assert shown in html, shown
    assert "<script" not in html and "http" not in html.split("</style>")[0]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert [h.action for h in page.history()] == ["raised"]


def test_the_form_acknowledges_with_the_name_and_via_alert_link(page: Page,
                                                               db: Database) -> None:
    response = page.client.post(page.link(), data={"name": "  Li   Wei "})
    assert response.status_code == 200, response.text
    assert "acknowledged by Li Wei" in response.text
    entry = page.history()[-1]
    assert (entry.action, entry.actor, entry.role, entry.note, entry.from_state,
            entry.to_state) == ("acknowledge", "Li Wei", "engineer", links.VIA_LINK, "open",
                                "acknowledged")
    assert entry.changes == {"state": ["open", "acknowledged"]}
    with db.session() as session:
        feed = list(session.scalars(select(FeedEvent.type).order_by(FeedEvent.seq)))
    assert feed == ["raised", "acknowledged"]
    shown = page.client.get("/api/v1/nonconformances/NC-000001/history",
                            headers=Api(page.client, db).headers("tracker"))
    assert shown.json()["items"][-1]["note"] == "via alert link"
    assert [h["channel"] for h in shown.json()["items"]] == ["api", "link"]


def test_a_second_acknowledgement_says_the_nc_is_acknowledged(page: Page) -> None:
    link = page.link()
    assert page.client.post(link, data={"name": "Li Wei"}).status_code == 200
    again = page.client.post(link, data={"name": "Zhang San"})
    assert again.status_code == 409
    assert "NC-000001 is acknowledged" in again.text
    assert "<form" not in again.text
    assert [(h.action, h.actor) for h in page.history()][1:] == [("acknowledge", "Li Wei")]
    shown = page.client.get(link)
    assert shown.status_code == 200 and "<form" not in shown.text


@pytest.mark.parametrize("name", ["", "   ", "\x07bell"])
def test_the_form_needs_a_name(page: Page, name: str) -> None:
    response = page.client.post(page.link(), data={"name": name})
    assert response.status_code == 422
    assert "Please enter your name" in response.text and "<form" in response.text
    assert page.state() == "open"


def test_only_a_form_post_acknowledges(page: Page) -> None:
    response = page.client.post(page.link(), json={"name": "Li Wei"})
    assert response.status_code == 415
    assert page.state() == "open"


def test_a_changed_link_is_a_400_page_and_changes_nothing(page: Page) -> None:
    forged = _flip(page.link(), len("/ack/") + 2)
    for method in ("get", "post"):
        response = page.client.request(method, forged, data={"name": "Mallory"})
        assert response.status_code == 400
        assert "not valid" in response.text and "<form" not in response.text
    assert page.state() == "open"


def test_an_expired_link_is_a_410_page_that_says_when(page: Page) -> None:
    link = page.link(expires_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    for method in ("get", "post"):
        response = page.client.request(method, link, data={"name": "Li Wei"})
        assert response.status_code == 410
        assert "expired at 2026-01-02 03:04 UTC" in response.text
    assert page.state() == "open"


def test_a_link_to_an_nc_that_is_not_there_is_404(page: Page) -> None:
    response = page.client.get(page.link(pk=99))
    assert response.status_code == 404 and "not there" in response.text


def test_the_page_speaks_chinese_when_asked(db: Database) -> None:
    with TestClient(create_app(db, locale="zh-CN")) as client:
        Api(client, db).apply(engine_event())
        page = Page(client, db)
        chosen = client.get(page.link())  # no Accept-Language: the site's locale
        assert '<html lang="zh-CN">' in chosen.text
        for shown in ("确认 NC-000001", "请填写确认人", "待处理", "重要", "不合格项"):
            assert shown in chosen.text, shown
        english = client.get(page.link(), headers={"Accept-Language": "en-GB,en;q=0.9"})
        assert '<html lang="en">' in english.text and "Who is acknowledging?" in english.text
        done = client.post(page.link(), data={"name": "李伟"},
                           headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
        assert done.status_code == 200 and "已由 李伟 确认" in done.text
        assert page.history()[-1].actor == "李伟"
        again = client.post(page.link(), data={"name": "李伟"},
                            headers={"Accept-Language": "zh-TW"})
        assert again.status_code == 409 and "已确认" in again.text


def test_the_page_speaks_the_notified_sites_language(db: Database) -> None:
    setup = NotifySetup(NotifyConfig(), SiteContext(locale="zh-CN"))
    with TestClient(create_app(db, notifier=setup)) as client:
        Api(client, db).apply(engine_event())
        assert '<html lang="zh-CN">' in client.get(Page(client, db).link()).text


def test_the_page_escapes_what_the_nc_says(page: Page, db: Database) -> None:
    made = page.client.post("/api/v1/nonconformances", headers=Api(page.client, db).headers(
        "quality"), json={"asset_id": "<i>CH-9</i>", "title": "<script>alert(1)</script>",
                         "severity": "minor"})
    assert made.status_code == 201, made.text
    html = page.client.get(page.link(pk=2)).text
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;i&gt;CH-9&lt;/i&gt;" in html


def test_the_page_is_no_api_route(page: Page) -> None:
    """Not in the OpenAPI document (a page, not the REST API) and needs no bearer token:
    the signed link is the permission."""
    paths = page.client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/ack")]
    assert page.client.get(page.link(), headers={"Authorization": "Bearer nonsense"}
                           ).status_code == 200
    assert page.client.get("/api/v1/silences").status_code == 401


def test_a_name_is_checked_before_anything_is_kept() -> None:
    assert links.check_name("  Li \t Wei ") == "Li Wei"
    with pytest.raises(Invalid):
        links.check_name("x" * 129)
