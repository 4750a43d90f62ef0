"""The console in a real browser (SPEC 7.4): Debian's chromium driven by Playwright over
a real HTTP server (uvicorn), on a desk (1280 px) and a phone (375 px), in English and
Chinese. Screenshots go to build/screenshots/ (not committed; CI keeps them as
artefacts)."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn

from api.app import create_app
from api.console import users
from api.store import Database
from tests.test_console_pages import PASSWORD
from tests.test_feed_webhooks import Patrol

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,  # a failure under make test
                                reason="chromium is not installed (scripts/services.sh)")


@pytest.fixture
def server(db: Database, port: int) -> Iterator[str]:
    """The app on a real socket: what the browser talks to."""
    with db.write() as session:
        users.add_user(session, name="li.wei", password=PASSWORD, role="engineer")
        users.add_user(session, name="wang.fang", password=PASSWORD, role="quality",
                       language="zh-CN")
        session.commit()
    app = create_app(db, timezone="Asia/Shanghai")
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _sign_in(page: object, base: str, name: str) -> None:
    page.goto(f"{base}/ncs")  # type: ignore[attr-defined]
    assert "/login" in page.url  # type: ignore[attr-defined]
    page.fill("input[name=name]", name)  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("button.primary")  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*/ncs$"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [1280, 375])
def test_an_engineer_signs_in_and_filters_the_nc_list(server: str, browser: object,
                                                      db: Database, width: int,
                                                      request: pytest.FixtureRequest) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(db)) as client:
        patrol = Patrol(client, db)
        acknowledged = patrol.raise_nc(asset="CH-2")
        patrol.act(acknowledged, "acknowledge")
        still_open = patrol.raise_nc(asset="CH-1")
    context = browser.new_context(viewport={"width": width, "height": 800})  # type: ignore[attr-defined]
    page = context.new_page()
    _sign_in(page, server, "li.wei")
    ids = page.locator("li.nc").evaluate_all("items => items.map(i => i.dataset.id)")
    assert set(ids) == {acknowledged, still_open}
    # choosing a state filters through htmx, and the URL keeps the filter
    page.select_option("select[name=state]", "open")
    page.wait_for_url(re.compile(r".*state=open.*"))
    page.wait_for_function("document.querySelectorAll('li.nc').length === 1")
    assert page.locator("li.nc").get_attribute("data-id") == still_open
    # nothing overflows the viewport sideways, and buttons are big enough to tap
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    height = page.locator("header button").first.bounding_box()["height"]
    assert height >= 44
    SHOTS.mkdir(parents=True, exist_ok=True)
    name = request.node.callspec.id.replace("/", "-")
    page.screenshot(path=str(SHOTS / f"ncs-en-{name}.png"), full_page=True)
    context.close()


def test_a_quality_user_reads_the_list_in_chinese(server: str, browser: object,
                                                  db: Database,
                                                  request: pytest.FixtureRequest) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(db)) as client:
        Patrol(client, db).raise_nc(asset="CH-1")
    context = browser.new_context(viewport={"width": 375, "height": 800},  # type: ignore[attr-defined]
                                  locale="zh-CN")
    page = context.new_page()
    page.goto(f"{server}/login")
    assert page.locator("h1").inner_text() == "登录"  # the browser's language, before
    _sign_in(page, server, "wang.fang")
    assert page.locator("h1").inner_text() == "不合格项"
    assert page.locator("li.nc .badge").first.inner_text() == "待处理"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"ncs-zh-375-{request.node.callspec.id}.png"),
                    full_page=True)
    # the session ends with sign-out: the list asks to sign in again
    page.click("form[action='/logout'] button")
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(f"{server}/ncs")
    assert "/login" in page.url
    context.close()


def test_the_closed_loop_in_the_browser(server: str, browser: object, db: Database,
                                        request: pytest.FixtureRequest) -> None:
    """An engineer opens the NC from the list, acknowledges and rectifies it with a root
    cause; a different, quality user verifies it; both pages in both languages shot."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(db)) as client:
        patrol = Patrol(client, db)
        event = patrol.event(asset="CH-1")
        start = datetime.fromisoformat(event["episode_start"].replace("Z", "+00:00"))
        event["evidence"]["readings"] = [
            [(start + timedelta(seconds=10 * i)).isoformat(), 7.0 + 0.1 * i]
            for i in range(-20, 25)]
        patrol.post_events(event)
        nc = client.get("/api/v1/nonconformances", headers=patrol.headers("tracker")
                        ).json()["items"][0]["id"]
    shots = SHOTS / request.node.callspec.id
    shots.mkdir(parents=True, exist_ok=True)
    engineer = browser.new_context(viewport={"width": 375, "height": 800})  # type: ignore[attr-defined]
    page = engineer.new_page()
    _sign_in(page, server, "li.wei")
    page.click(f"li.nc[data-id='{nc}'] a")
    page.wait_for_url(re.compile(f".*/ncs/{nc}$"))
    # the evidence, drawn: 45 readings and the limits, on a canvas as wide as the phone
    page.wait_for_selector("#plot[data-points='45'] canvas")
    assert page.locator("#plot canvas").first.bounding_box()["width"] <= 375
    legend = page.locator("#plot .u-legend").inner_text()
    assert "lower limit" in legend and "upper limit" in legend
    assert page.locator("form[data-action=cancel] button").is_disabled()  # quality's
    page.click("form[data-action=acknowledge] button")
    page.wait_for_selector("#state[data-state=acknowledged]")
    rectify = page.locator("form[data-action=rectify]")
    rectify.locator("textarea[name=action]").fill("replaced the valve actuator")
    rectify.locator("textarea[name=root_cause]").fill("worn actuator")
    rectify.locator("select[name=root_cause_category]").select_option("equipment_wear")
    rectify.locator("button").click()
    page.wait_for_selector("#state[data-state=pending_verification]")
    assert page.locator("form[data-action=verify] button").is_disabled()
    page.screenshot(path=str(shots / "nc-en-375.png"), full_page=True)
    engineer.close()
    with TestClient(create_app(db)) as client:  # two snapshots after the rectification
        from rules.events import Snapshot

        patrol = Patrol(client, db)
        fixed = datetime.fromisoformat(client.get(
            f"/api/v1/nonconformances/{nc}", headers=patrol.headers("tracker")
        ).json()["rectification"]["at"])
        for n in (1, 2):
            at = fixed + timedelta(minutes=n)
            patrol.post_events(Snapshot("tower-a", (at - timedelta(minutes=1)).timestamp(),
                                        at.timestamp(), [{
                "asset_id": "CH-1", "standard_id": "HVAC-CHW-SUPPLY", "standard_version": 1,
                "state": "ok", "seconds": {"ok": 60.0}, "readings": 6,
                "last_value": 7.2 + n / 10, "last_at": at.isoformat()}]).to_dict())

    quality = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = quality.new_page()
    _sign_in(page, server, "wang.fang")
    page.goto(f"{server}/ncs/{nc}")
    assert page.locator("h2").first.inner_text() == "概要"
    page.wait_for_selector("#plot[data-points='45'][data-verifying-points='2'] canvas")
    legend = page.locator("#plot .u-legend").inner_text()
    assert "时间" in legend and "下限" in legend and not re.search(r"Time|limit|[ap]m", legend)
    assert "验证期间" in legend
    page.locator("form[data-action=verify] select[name=result]").select_option("pass")
    page.click("form[data-action=verify] button")
    page.wait_for_selector("#state[data-state=closed]")
    timeline = page.locator("ol.timeline li").evaluate_all(
        "items => items.map(i => i.dataset.action)")
    assert timeline == ["raised", "acknowledge", "rectify", "verify"]
    page.screenshot(path=str(shots / "nc-zh-1280.png"), full_page=True)
    quality.close()


def test_the_board_shows_the_apis_states_in_their_colours(server: str, browser: object,
                                                          db: Database,
                                                          request: pytest.FixtureRequest
                                                          ) -> None:
    from fastapi.testclient import TestClient

    from rules.events import Snapshot

    states = {"CH-1": "violating", "CH-2": "ok", "AHU-1": "no_data", "PUMP-1": "inactive"}
    now = time.time()
    with TestClient(create_app(db)) as client:
        patrol = Patrol(client, db)
        patrol.post_events(Snapshot("tower-a", now - 60, now, [
            {"asset_id": asset, "standard_id": "HVAC-CHW-SUPPLY", "standard_version": 1,
             "state": state, "seconds": {state: 60.0}, "readings": 1}
            for asset, state in states.items()]).to_dict())
        api = {p["asset_id"]: p["state"] for p in client.get(
            "/api/v1/compliance", headers=patrol.headers("tracker")).json()["items"]}
    context = browser.new_context(viewport={"width": 375, "height": 800}, locale="zh-CN")  # type: ignore[attr-defined]
    page = context.new_page()
    _sign_in(page, server, "wang.fang")
    page.goto(f"{server}/board")
    legend = {state: page.locator(f".legend .state-{state}").evaluate(
        "e => getComputedStyle(e).backgroundColor") for state in states.values()}
    assert len(set(legend.values())) == 4  # four colours
    cells = page.locator("td[data-pair]").evaluate_all(
        "cells => cells.map(c => [c.dataset.pair.split('/')[0], c.dataset.state, "
        "getComputedStyle(c).backgroundColor])")
    assert {asset: state for asset, state, _ in cells} == api == states
    assert all(colour == legend[state] for _, state, colour in cells)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"board-zh-375-{request.node.callspec.id}.png"),
                    full_page=True)
    context.close()


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_every_page_in_both_widths_fits_and_is_shot(server: str, browser: object,
                                                    db: Database, language: str,
                                                    request: pytest.FixtureRequest) -> None:
    """Every page, at 1280 and 375 px: nothing wider than the phone (wide tables scroll
    inside their own box), and a screenshot each for the record."""
    from fastapi.testclient import TestClient

    from tests.test_gateways import beat

    with TestClient(create_app(db)) as client:
        patrol = Patrol(client, db)
        nc = patrol.raise_nc(asset="CH-1")
        for gateway in ("plant-room-pi", "tower-b-roof-pi"):
            client.post("/api/v1/heartbeats", json=beat(gateway=gateway),
                        headers=patrol.headers("agent")).raise_for_status()
    with db.write() as session:
        users.add_user(session, name="sun.admin", password=PASSWORD, role="admin",
                       language=language)
        session.commit()
    shots = SHOTS / "pages" / request.node.callspec.id
    shots.mkdir(parents=True, exist_ok=True)
    for width in (1280, 375):
        context = browser.new_context(viewport={"width": width, "height": 800},  # type: ignore[attr-defined]
                                      locale=language)
        page = context.new_page()
        page.goto(f"{server}/login")
        page.screenshot(path=str(shots / f"login-{width}.png"), full_page=True)
        _sign_in(page, server, "sun.admin")
        for name, path in (("ncs", "/ncs"), ("nc", f"/ncs/{nc}"), ("board", "/board"),
                           ("report", "/report"), ("inspections", "/inspections"),
                           ("notifications", "/notifications"), ("gateways", "/gateways"),
                           ("users", "/admin/users")):
            answer = page.goto(f"{server}{path}")
            assert answer is not None and answer.status == 200, path
            assert page.evaluate("document.documentElement.scrollWidth") <= width, (path, width)
            assert page.locator("html").get_attribute("lang") == language
            page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
        context.close()


def test_a_forged_form_and_an_idle_session_are_refused(server: str, browser: object,
                                                       db: Database) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from api.store import ConsoleSession

    with TestClient(create_app(db)) as client:
        nc = Patrol(client, db).raise_nc(asset="CH-1")
    context = browser.new_context(viewport={"width": 375, "height": 800})  # type: ignore[attr-defined]
    page = context.new_page()
    _sign_in(page, server, "li.wei")
    page.goto(f"{server}/ncs/{nc}")
    page.evaluate("document.querySelector('form[data-action=acknowledge] input[name=csrf]')"
                  ".value = 'forged'")
    with page.expect_navigation():
        page.click("form[data-action=acknowledge] button")
    assert "expired or was not sent by this page" in page.inner_text("body")
    page.goto(f"{server}/ncs/{nc}")
    assert page.locator("#state").get_attribute("data-state") == "open"  # not acknowledged
    with db.write() as session:  # the session left unused for longer than users.IDLE
        session.execute(update(ConsoleSession).values(
            last_seen_at=datetime.now(UTC) - users.IDLE - timedelta(minutes=1)))
        session.commit()
    page.goto(f"{server}/ncs/{nc}")
    assert "/login" in page.url
    context.close()
