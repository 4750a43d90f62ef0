# ruff: noqa: RUF001  (Chinese text is written with full-width punctuation)
"""The console's pages over HTTP (SPEC 7.4): sign-in, the session cookie, CSRF on every
form, the NC list with the API's filters and scope, and a zh-CN page without English.
The browser tests (tests/test_console_browser.py) drive the same pages in Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.console import users
from api.store import Database
from tests.test_feed_webhooks import Patrol

PASSWORD = "plant-room-7"


@pytest.fixture
def patrol(db: Database) -> Iterator[Patrol]:
    with db.write() as session:
        users.add_user(session, name="li.wei", password=PASSWORD, role="engineer",
                       sites=["tower-a"])
        users.add_user(session, name="wang.fang", password=PASSWORD, role="quality",
                       language="zh-CN")
        session.commit()
    with TestClient(create_app(db), base_url="https://testserver") as client:
        yield Patrol(client, db)


def sign_in(client: TestClient, name: str, password: str = PASSWORD,
            follow: bool = False) -> object:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    return client.post("/login", data={"name": name, "password": password,
                                       "csrf": csrf.group(1), "next": "/ncs"},
                       follow_redirects=follow)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def test_pages_need_a_signed_in_person(patrol: Patrol) -> None:
    answer = patrol.client.get("/ncs?state=open", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fncs%3Fstate%3Dopen"
    assert patrol.client.get("/", follow_redirects=False).headers["location"] == "/login"


def test_sign_in_sets_a_strict_httponly_cookie_and_a_wrong_password_says_so(
        patrol: Patrol) -> None:
    refused = sign_in(patrol.client, "li.wei", "not-the-password")
    assert refused.status_code == 401  # type: ignore[attr-defined]
    assert "Wrong name or password." in refused.text  # type: ignore[attr-defined]
    signed = sign_in(patrol.client, "li.wei")
    assert signed.status_code == 303  # type: ignore[attr-defined]
    cookie = signed.headers["set-cookie"]  # type: ignore[attr-defined]
    assert cookie.startswith("patrol_session=")
    for flag in ("HttpOnly", "SameSite=strict", "Secure", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie
    assert patrol.client.get("/ncs").status_code == 200


def test_a_sign_in_form_from_elsewhere_is_refused(patrol: Patrol) -> None:
    answer = patrol.client.post("/login", data={"name": "li.wei", "password": PASSWORD,
                                                "csrf": "forged"}, follow_redirects=False)
    assert answer.status_code == 403
    assert "patrol_session" not in answer.headers.get("set-cookie", "")


def test_forms_without_the_sessions_csrf_token_are_refused(patrol: Patrol) -> None:
    sign_in(patrol.client, "li.wei")
    refused = patrol.client.post("/logout", data={"csrf": "guess"}, follow_redirects=False)
    assert refused.status_code == 403
    assert patrol.client.get("/ncs").status_code == 200  # still signed in
    token = csrf_of(patrol.client.get("/ncs").text)
    out = patrol.client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert patrol.client.get("/ncs", follow_redirects=False).status_code == 303


FORM_ROUTES = ("/logout", "/language", "/ncs/NC-000001/external_ref",
               "/ncs/NC-000001/acknowledge", "/admin/users/1/disable", "/inspections",
               "/inspections/1/items/x", "/silences", "/silences/1/expire")


def test_every_form_route_refuses_a_post_without_a_session_or_its_csrf_token(
        patrol: Patrol) -> None:
    nc = patrol.raise_nc(asset="CH-1")
    for path in FORM_ROUTES:
        answer = patrol.client.post(path.replace("NC-000001", nc), data={"csrf": "x"},
                                    follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login"), path
    sign_in(patrol.client, "li.wei")
    for path in FORM_ROUTES:
        answer = patrol.client.post(path.replace("NC-000001", nc), data={"csrf": "guess"},
                                    follow_redirects=False)
        assert answer.status_code == 403, path
    assert patrol.client.get(f"/ncs/{nc}").status_code == 200  # still signed in
    assert patrol.client.get("/api/v1/nonconformances/" + nc,
                             headers=patrol.headers("tracker")).json()["state"] == "open"


def test_the_nc_list_filters_and_keeps_to_the_users_sites(patrol: Patrol) -> None:
    mine = patrol.raise_nc(asset="CH-1")
    other = patrol.raise_nc(asset="CH-2")
    patrol.act(other, "acknowledge")
    elsewhere = patrol.raise_nc(site="tower-b", asset="CH-1")
    sign_in(patrol.client, "li.wei")
    everything = patrol.client.get("/ncs").text
    assert mine in everything and other in everything
    assert elsewhere not in everything  # li.wei reaches tower-a only
    only_open = patrol.client.get("/ncs", params={"state": "open"}).text
    assert mine in only_open and other not in only_open
    assert 'value="open" selected' in only_open  # the filter is kept in the page
    assert patrol.client.get("/ncs", params={"asset_id": "CH-2"}).text.count(
        'class="nc ') == 1
    assert patrol.client.get("/ncs", params={"state": "bogus", "cursor": "junk"}
                             ).status_code == 200
    # the search box: words found in the id, title, asset or standard, case aside
    found = patrol.client.get("/ncs", params={"text": "ch-2 chilled"}).text
    assert other in found and mine not in found
    assert mine in patrol.client.get("/ncs", params={"text": mine}).text
    assert 'class="nc ' not in patrol.client.get("/ncs", params={"text": "100%_"}).text


class VisibleText(HTMLParser):
    """The text a person reads: no script or style, and no element marked as data
    (`translate="no"`: codes from site.yaml) or as another language."""

    def __init__(self) -> None:
        super().__init__()
        self.skip: list[str] = []
        self.words: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        marks = dict(attrs)
        if tag in ("script", "style", "title") or marks.get("lang") == "en" \
                or marks.get("translate") == "no":
            self.skip.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip and self.skip[-1] == tag:
            self.skip.pop()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.words += re.findall(r"[A-Za-z]{2,}", data)


def test_a_zh_cn_page_shows_no_english_outside_data(patrol: Patrol) -> None:
    nc = patrol.raise_nc(asset="CH-1")
    patrol.act(nc, "acknowledge")
    patrol.act(nc, "rectify", action="replaced", root_cause="wear")
    sign_in(patrol.client, "wang.fang")
    page = patrol.client.get("/ncs").text
    assert "不合格项" in page and "待验证" in page
    detail = patrol.client.get(f"/ncs/{nc}").text
    assert "处理记录" in detail and "提交整改" in detail
    reader = VisibleText()
    reader.feed(page + detail + patrol.client.get("/board").text
                + patrol.client.get("/report", params={"group_by": "asset"}).text
                + patrol.client.get("/inspections").text
                + patrol.client.get("/notifications").text
                + patrol.client.get("/gateways").text)
    public = patrol.client.get(f"/api/v1/nonconformances/{nc}",
                               headers=patrol.headers("tracker")).json()
    data = {"wang", "fang"} | {  # the user's name, and the NC's own words
        word for value in public.values() if isinstance(value, str)
        for word in re.findall(r"[A-Za-z]{2,}", value)}
    english = [w for w in reader.words if w not in data]
    assert english == [], english


def test_both_catalogs_have_the_same_keys_and_none_hides_behind_a_dict_method() -> None:
    from api.console.i18n import EN, ZH

    def keys(catalog: dict[str, object], prefix: str = "") -> set[str]:
        found = set()
        for key, value in catalog.items():
            found.add(prefix + key)
            if isinstance(value, dict):
                found |= keys(value, f"{prefix}{key}.")
        return found

    assert keys(EN) == keys(ZH)
    assert not {key.rsplit(".", 1)[-1] for key in keys(EN)} & set(dir(dict))


def test_the_closed_loop_in_pages_leaves_the_apis_history(patrol: Patrol) -> None:
    """An engineer acknowledges and rectifies, a quality user verifies: the history
    names them as the API would, and a role's missing actions show disabled and are
    refused by the server too."""
    nc = patrol.raise_nc(asset="CH-1")
    sign_in(patrol.client, "li.wei")
    page = patrol.client.get(f"/ncs/{nc}").text
    token = csrf_of(page)
    assert re.search(r'data-action="acknowledge">.*?<button class="primary" >', page, re.S)
    assert re.search(r'data-action="cancel">.*?<button class="primary" disabled', page, re.S)
    refused = patrol.client.post(f"/ncs/{nc}/cancel", data={"csrf": token, "reason": "x"})
    assert refused.status_code == 403 and "Not done" in refused.text
    for action, fields in (("acknowledge", {}),
                           ("rectify", {"action": "replaced the valve actuator",
                                        "root_cause": "worn actuator",
                                        "root_cause_category": "equipment_wear"})):
        done = patrol.client.post(f"/ncs/{nc}/{action}", data={"csrf": token, **fields},
                                  follow_redirects=False)
        assert done.status_code == 303, done.text
    missing = patrol.client.post(f"/ncs/{nc}/verify", data={"csrf": token, "result": "pass"})
    assert missing.status_code == 403  # an engineer does not verify
    patrol.client.post("/logout", data={"csrf": token})
    sign_in(patrol.client, "wang.fang")
    token = csrf_of(patrol.client.get(f"/ncs/{nc}").text)
    bad = patrol.client.post(f"/ncs/{nc}/verify", data={"csrf": token, "result": "maybe"})
    assert bad.status_code == 422 and "result" in bad.text
    done = patrol.client.post(f"/ncs/{nc}/verify", data={"csrf": token, "result": "pass"},
                              follow_redirects=False)
    assert done.status_code == 303
    history = patrol.client.get(f"/api/v1/nonconformances/{nc}/history",
                                headers=patrol.headers("tracker")).json()["items"]
    assert [(h["action"], h["actor"], h["role"], h["channel"]) for h in history] == [
        ("raised", "agent-1", "agent", "api"), ("acknowledge", "li.wei", "engineer", "console"),
        ("rectify", "li.wei", "engineer", "console"), ("verify", "wang.fang", "quality",
                                                       "console")]
    rectified = history[2]["changes"]["rectification"][1]
    assert (rectified["root_cause_category"], rectified["by"]) == ("equipment_wear", "li.wei")
    # the same actions through the API leave the same entries but for the channel
    other = patrol.raise_nc(asset="CH-2")
    patrol.act(other, "acknowledge")
    through_api = patrol.client.get(f"/api/v1/nonconformances/{other}/history",
                                    headers=patrol.headers("tracker")).json()["items"][1]
    in_console = dict(history[1])
    assert in_console.pop("channel") == "console" and through_api.pop("channel") == "api"
    assert set(in_console) == set(through_api)
    assert (in_console["action"], in_console["from_state"], in_console["to_state"]) == (
        through_api["action"], through_api["from_state"], through_api["to_state"])
    page = patrol.client.get(f"/ncs/{nc}").text
    assert 'data-state="closed"' in page and "已关闭" in page
    assert 'data-verification="manual"' in page and "wang.fang 验证：通过。" in page


def test_the_board_colours_each_pair_as_the_api_states_it(patrol: Patrol) -> None:
    from rules.events import Snapshot
    from tests.test_scope import NOW

    states = {"CH-1": "violating", "CH-2": "ok", "AHU-1": "no_data", "PUMP-1": "inactive"}
    items = [{"asset_id": asset, "standard_id": "HVAC-CHW-SUPPLY", "standard_version": 1,
              "state": state, "seconds": {state: 60.0}, "readings": 1}
             for asset, state in states.items()]
    for site in ("tower-a", "tower-b"):
        patrol.post_events(Snapshot(site, NOW.timestamp() - 60, NOW.timestamp(),
                                    items).to_dict())
    nc = patrol.raise_nc(asset="CH-1")
    sign_in(patrol.client, "li.wei")  # tower-a only
    page = patrol.client.get("/board").text
    shown = dict(re.findall(r'data-pair="([^"]+)" data-state="([^"]+)"', page))
    api = patrol.client.get("/api/v1/compliance", params={"site_id": "tower-a"},
                            headers=patrol.headers("tracker")).json()["items"]
    assert shown == {f"{p['asset_id']}/{p['standard_id']}": p["state"] for p in api}
    assert len(shown) == 4 and "tower-b" not in page
    assert f'href="/ncs/{nc}"' in page  # the violating pair links its open NC


def test_the_kpi_page_shows_the_report_apis_numbers(patrol: Patrol) -> None:
    for asset in ("CH-1", "CH-2", "AHU-1"):
        patrol.raise_nc(asset=asset)
    first = patrol.raise_nc(asset="CH-1")
    patrol.act(first, "acknowledge")
    sign_in(patrol.client, "wang.fang")
    params = {"group_by": "standard"}
    page = patrol.client.get("/report", params=params)
    assert page.status_code == 200 and "指标报表" in page.text
    api = patrol.client.get("/api/v1/reports/compliance", params=params,
                            headers=patrol.headers("quality")).json()
    rows = dict(re.findall(r'<tr data-row="([^"]+)">(.*?)</tr>', page.text, re.S))
    wanted = {"total": api["total"]["figures"]} | {
        "/".join(map(str, g["key"].values())): g["figures"] for g in api["groups"]}
    assert set(rows) == set(wanted)
    for row, figures in wanted.items():
        cells = dict(re.findall(r'data-figure="([^"]+)" data-value="([^"]*)"', rows[row]))
        assert cells, rows[row]
        for name, text in cells.items():
            expected = figures[name]
            assert (float(text) if text else None) == expected, (row, name)
    assert wanted["total"]["raised"] == 3
    bars = re.findall(r'data-chart="pareto">(.*?)</section>', page.text, re.S)[0]
    shown = re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', bars)
    assert shown == [(f"{p['asset']}/{p['standard']}", str(int(p["value"])))
                     for p in api["total"]["figures"]["pareto"] if p["by"] == "count"]
    monthly = patrol.client.get("/report", params={"group_by": "month"}).text
    api_months = patrol.client.get("/api/v1/reports/compliance", params={"group_by": "month"},
                                   headers=patrol.headers("quality")).json()["groups"]
    trend = re.findall(r'data-chart="trend">(.*?)</section>', monthly, re.S)[0]
    assert re.findall(r'data-key="([^"]+)"', trend) == [g["key"]["month"] for g in api_months]
    csv = patrol.client.get("/report/download", params={**params, "format": "csv"})
    assert csv.status_code == 200 and csv.content.startswith(b"\xef\xbb\xbf")
    xlsx = patrol.client.get("/report/download", params={**params, "format": "xlsx"})
    assert xlsx.content[:2] == b"PK"
    bad = patrol.client.get("/report", params={"from": "yesterday"})
    assert bad.status_code == 422 and "from must be a date" in bad.text


def test_every_page_loads_under_200_kb_gzipped(patrol: Patrol) -> None:
    """A first load (the page and every script and stylesheet it names) on a weak link."""
    nc = patrol.raise_nc(asset="CH-1")
    sign_in(patrol.client, "wang.fang")
    for path in ("/login", "/ncs", f"/ncs/{nc}", "/board", "/report", "/inspections",
                 "/notifications", "/gateways"):
        page = patrol.client.get(path, headers={"Accept-Encoding": "gzip"})
        assert page.status_code == 200, path
        assert page.headers.get("content-encoding") == "gzip", path
        files = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        total = page.num_bytes_downloaded + sum(
            patrol.client.get(f, headers={"Accept-Encoding": "gzip"}).num_bytes_downloaded
            for f in files)
        assert total < 200_000, (path, total)
    api = patrol.client.get("/api/v1/nonconformances", headers={
        **patrol.headers("tracker"), "Accept-Encoding": "gzip"})
    assert "content-encoding" not in api.headers  # the API is not compressed


def test_an_administrator_resets_a_password_and_others_may_not(patrol: Patrol) -> None:
    with patrol.db.write() as session:
        users.add_user(session, name="zhao.admin", password=PASSWORD, role="admin")
        session.commit()
    engineer = TestClient(patrol.client.app, base_url="https://testserver")
    sign_in(engineer, "li.wei")
    assert engineer.get("/admin/users").status_code == 403
    sign_in(patrol.client, "zhao.admin")
    page = patrol.client.get("/admin/users").text
    token = csrf_of(page)
    ids = dict(re.findall(r'data-user="([^"]+)">.*?/admin/users/(\d+)/password', page,
                          re.S))
    reach = dict(re.findall(r'data-user="([^"]+)">.*?<small[^>]*>([^<]+)</small>', page,
                            re.S))
    assert reach["li.wei"] == "tower-a" and reach["zhao.admin"] == "every site"
    weak = patrol.client.post(f"/admin/users/{ids['li.wei']}/password",
                              data={"csrf": token, "password": "short"})
    assert weak.status_code == 422 and "at least 10" in weak.text
    done = patrol.client.post(f"/admin/users/{ids['li.wei']}/password",
                              data={"csrf": token, "password": "a-new-password"})
    assert done.status_code == 200 and "li.wei" in done.text
    assert engineer.get("/ncs", follow_redirects=False).status_code == 303  # signed out
    assert sign_in(engineer, "li.wei", "a-new-password").status_code == 303  # type: ignore[attr-defined]
    patrol.client.post(f"/admin/users/{ids['li.wei']}/disable", data={"csrf": token})
    assert engineer.get("/ncs", follow_redirects=False).status_code == 303


def test_quality_runs_an_inspection_and_a_failed_checklist_item_opens_an_nc(
        db: Database) -> None:
    from tests.test_inspections import item, setup, snapshot

    with db.write() as session:
        users.add_user(session, name="wang.fang", password=PASSWORD, role="quality")
        users.add_user(session, name="li.wei", password=PASSWORD, role="engineer")
        session.commit()
    app = create_app(db, site_id="tower-a", inspections=setup())
    with TestClient(app, base_url="https://testserver") as client:
        patrol = Patrol(client, db)
        patrol.post_events(snapshot(item("CH-1", "HVAC-CHW-SUPPLY", "violating", 9.4),
                                    item("AHU-1", "HVAC-AHU-TEMP", "ok", 16.0)))
        sign_in(client, "li.wei")
        page = client.get("/inspections").text
        assert re.search(r'data-form="run">.*?<button class="primary" disabled', page, re.S)
        refused = client.post("/inspections", data={"csrf": csrf_of(page),
                                                    "template": "daily-patrol"})
        assert refused.status_code == 403
        client.post("/logout", data={"csrf": csrf_of(page)})
        sign_in(client, "wang.fang")
        token = csrf_of(client.get("/inspections").text)
        ran = client.post("/inspections", data={"csrf": token, "template": "daily-patrol"},
                          follow_redirects=False)
        assert ran.status_code == 303, ran.text
        report_path = ran.headers["location"]
        report = client.get(report_path).text
        results = dict(re.findall(r'data-item="([^"]+)" data-result="([^"]+)"', report))
        assert results == {"CH-1/HVAC-CHW-SUPPLY": "fail", "AHU-1/HVAC-AHU-TEMP": "pass",
                           "logbook": "pending", "extinguishers": "pending"}
        answered = client.post(f"{report_path}/items/logbook",
                               data={"csrf": token, "result": "fail", "note": "not filled"},
                               follow_redirects=True)
        assert 'data-item="logbook" data-result="fail"' in answered.text
        nc = re.search(r'data-item="logbook".*?href="/ncs/(NC-\d+)"', answered.text, re.S)
        assert nc, answered.text
        opened = client.get(f"/api/v1/nonconformances/{nc.group(1)}",
                            headers=patrol.headers("tracker")).json()
        assert opened["source"] == "inspection" and opened["state"] == "open"
        bad = client.post(f"{report_path}/items/extinguishers",
                          data={"csrf": token, "result": "maybe"})
        assert bad.status_code == 422
        listing = client.get("/inspections").text
        assert f'href="{report_path}"' in listing


def test_an_engineer_silences_alerts_and_ends_the_silence(patrol: Patrol) -> None:
    sign_in(patrol.client, "li.wei")
    page = patrol.client.get("/notifications")
    assert page.status_code == 200 and "No silence now." in page.text
    token = csrf_of(page.text)
    bad = patrol.client.post("/silences", data={"csrf": token, "asset_id": "CH-1",
                                                "hours": "forever", "comment": "service"})
    assert bad.status_code == 422 and "number of hours" in bad.text
    made = patrol.client.post("/silences", data={
        "csrf": token, "site_id": "tower-a", "asset_id": "CH-1", "severity": "minor", "hours": "2",
        "comment": "chiller service"}, follow_redirects=True)
    assert made.status_code == 200, re.findall(r"role=.alert.>([^<]*)", made.text)
    api = patrol.client.get("/api/v1/silences", headers=patrol.headers("tracker")).json()
    [silence] = api["items"]
    assert silence["matchers"] == {"site_id": ["tower-a"], "asset_id": ["CH-1"],
                                   "severity": ["minor"]}
    assert silence["author"] == "li.wei" and silence["comment"] == "chiller service"
    assert f'data-silence="{silence["id"]}"' in made.text
    ended = patrol.client.post(f"/silences/{silence['id']}/expire", data={"csrf": token},
                               follow_redirects=True)
    assert f'data-silence="{silence["id"]}"' not in ended.text
    after = patrol.client.get(f"/api/v1/silences/{silence['id']}",
                              headers=patrol.headers("tracker")).json()
    assert after["state"] == "expired"


def test_the_gateways_page_shows_the_apis_gateways_of_the_persons_sites(
        patrol: Patrol) -> None:
    from datetime import UTC, datetime, timedelta

    from api.gateways import mark_offline
    from tests.test_gateways import beat

    for site, gateway in (("tower-a", "pi-1"), ("tower-a", "pi-2"), ("tower-b", "pi-9")):
        answer = patrol.client.post("/api/v1/heartbeats", json=beat(site, gateway),
                                    headers=patrol.headers("agent"))
        assert answer.status_code == 200, answer.text
    later = datetime.now(UTC) + timedelta(minutes=6)
    assert mark_offline(patrol.db.write, timedelta(minutes=5),
                        started=later - timedelta(hours=1), now=later) == 3
    assert patrol.client.post("/api/v1/heartbeats", json=beat("tower-a", "pi-2"),
                              headers=patrol.headers("agent")).status_code == 200
    sign_in(patrol.client, "li.wei")  # tower-a only
    page = patrol.client.get("/gateways").text
    shown = dict(re.findall(r'data-gateway="([^"]+)" data-status="([^"]+)"', page))
    assert shown == {"tower-a/pi-1": "offline", "tower-a/pi-2": "online"}
    assert page.index("tower-a/pi-1") < page.index("tower-a/pi-2")  # offline first
    api = patrol.client.get("/api/v1/gateways", params={"site_id": "tower-a"},
                            headers=patrol.headers("tracker")).json()["items"]
    offline_nc = next(g["offline_nc"] for g in api if g["gateway_id"] == "pi-1")
    assert offline_nc and f'href="/ncs/{offline_nc}"' in page
    assert "modbus:plc" in page and "1200" in page and "-0.25 s" in page
    assert "pi-9" not in page


def test_a_tracker_sets_the_external_reference_and_an_engineer_may_not(
        patrol: Patrol) -> None:
    nc = patrol.raise_nc(asset="CH-1")
    with patrol.db.write() as session:
        users.add_user(session, name="tracker.bot", password=PASSWORD, role="tracker")
        session.commit()
    sign_in(patrol.client, "li.wei")
    page = patrol.client.get(f"/ncs/{nc}").text
    assert re.search(r'data-action="external_ref">.*?<button class="primary" disabled', page,
                     re.S)
    refused = patrol.client.post(f"/ncs/{nc}/external_ref",
                                 data={"csrf": csrf_of(page), "external_ref": "JIRA-1"})
    assert refused.status_code == 403
    patrol.client.post("/logout", data={"csrf": csrf_of(page)})
    sign_in(patrol.client, "tracker.bot")
    token = csrf_of(patrol.client.get(f"/ncs/{nc}").text)
    done = patrol.client.post(f"/ncs/{nc}/external_ref",
                              data={"csrf": token, "external_ref": "JIRA-7"},
                              follow_redirects=False)
    assert done.status_code == 303
    public = patrol.client.get(f"/api/v1/nonconformances/{nc}",
                               headers=patrol.headers("tracker")).json()
    assert public["external_ref"] == "JIRA-7"
    history = patrol.client.get(f"/api/v1/nonconformances/{nc}/history",
                                headers=patrol.headers("tracker")).json()["items"]
    assert (history[-1]["actor"], history[-1]["channel"]) == ("tracker.bot", "console")
    assert history[-1]["changes"] == {"external_ref": [None, "JIRA-7"]}
    assert 'value="JIRA-7"' in patrol.client.get(f"/ncs/{nc}").text
