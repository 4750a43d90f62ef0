"""Site catalogs (SPEC 7.3, 7.5): the agent's assets and standards reach the API through the
event contract, and GET /assets and GET /standards list them with every standard version
seen, on SQLite and PostgreSQL; `patrol run` and a fleet (`patrol agent` -> `patrol api`)
serve them from the site's own files."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from agent.catalog import catalog_entry, site_catalog
from agent.runtime import run_site
from agent.site import load_site
from api.app import create_app
from api.auth import create_token
from api.catalog import list_assets, list_standards
from api.ingest import apply_events
from api.store import Database
from rules.events import (
    CONTRACT_VERSION,
    UNKNOWN_FIELDS,
    AnyEvent,
    CatalogAsset,
    CatalogStandard,
    EventsIn,
    SiteCatalog,
    SiteCatalogIn,
    iso,
)
from rules.standard import Asset, Standard
from tests.conftest import free_port
from tests.test_api import NOW, Api, bearer, engine_event

T1 = NOW - timedelta(days=30)
T2 = T1 + timedelta(days=7)
T3 = T2 + timedelta(days=7)
CHW = "HVAC-CHW-SUPPLY"


def standard(version: int = 1, *, standard_id: str = CHW, kind: str = "range",
             title: str | None = None) -> Standard:
    check: dict[str, Any] = ({"min": 6, "max": 8} if kind == "range"
                             else {"kind": "stale", "after": "10m"})
    return Standard.model_validate({
        "id": standard_id, "version": version, "title": title or f"{standard_id} v{version}",
        "metric": "chw_supply_temp", "check": check, "for": "10m", "severity": "major"})


def asset(asset_id: str, asset_type: str = "chiller", **fields: Any) -> Asset:
    return Asset.model_validate({"id": asset_id, "type": asset_type, **fields})


def catalog(at: datetime, *, site: str = "tower-a", assets: tuple[Asset, ...] = (),
            standards: tuple[Standard, ...] = ()) -> dict[str, Any]:
    """A catalog as an agent writes it (agent.catalog's entries, SiteCatalog.to_dict)."""
    return SiteCatalog(site, at.timestamp(),
                       [a.model_dump(mode="json") for a in assets],
                       [catalog_entry(s, None) for s in standards]).to_dict()


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db)) as client:
        yield Api(client, db)


def get(api: Api, path: str, role: str = "tracker", **params: Any) -> dict[str, Any]:
    response = api.client.get(f"/api/v1/{path}", params=params, headers=api.headers(role))
    assert response.status_code == 200, response.text
    return response.json()


def moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def spans(item: dict[str, Any]) -> list[tuple[int, datetime | None, datetime | None]]:
    """(version, in force from, until) of a listed standard, as listed (newest first)."""
    return [(v["version"], moment(v["in_force_from"]), moment(v["in_force_until"]))
            for v in item["versions"]]


# --- the contract ----------------------------------------------------------------------


def test_the_producer_writes_exactly_the_fields_the_consumer_declares(tmp_path: Path) -> None:
    """A field added to SiteCatalog.to_dict or to agent.catalog's entries without adding it
    to the contract fails here; the consumer reads back what the producer wrote."""
    site = write_site(tmp_path, version=3)
    body = site_catalog(load_site(site), T1.timestamp()).to_dict()
    assert set(body) == set(SiteCatalogIn.model_fields)
    assert body["schema_version"] == CONTRACT_VERSION == 3
    assert body["type"] == "site_catalog" and body["at"] == iso(T1.timestamp())
    assert [set(a) for a in body["assets"]] == [set(CatalogAsset.model_fields)] * 2
    assert [set(s) for s in body["standards"]] == [set(CatalogStandard.model_fields)]
    parsed = EventsIn.model_validate({"events": [body]})
    assert parsed.unknown_fields == ()
    (read,) = parsed.events
    assert isinstance(read, SiteCatalogIn)
    assert [a.model_dump() for a in read.assets] == body["assets"]
    assert [s.model_dump() for s in read.standards] == body["standards"]
    entry = read.standards[0]
    assert (entry.id, entry.version, entry.kind, entry.file) == (
        CHW, 3, "range", "standards/plant.yaml")
    assert entry.definition["check"] == {"kind": "range", "min": 6.0, "max": 8.0}
    assert entry.definition["for"] == "10m"  # durations as written


def test_the_in_process_sink_reads_catalogs_with_the_contracts_union() -> None:
    from pydantic import TypeAdapter

    body = catalog(T1, assets=(asset("CH-1"),), standards=(standard(),))
    assert isinstance(TypeAdapter(AnyEvent).validate_python(body), SiteCatalogIn)


def test_a_catalogs_id_comes_from_its_content_and_time() -> None:
    first = catalog(T1, assets=(asset("CH-1"),), standards=(standard(),))
    assert catalog(T1, assets=(asset("CH-1"),), standards=(standard(),))["id"] == first["id"]
    others = [catalog(T2, assets=(asset("CH-1"),), standards=(standard(),)),
              catalog(T1, assets=(asset("CH-1"),), standards=(standard(2),)),
              catalog(T1, assets=(asset("CH-2"),), standards=(standard(),)),
              catalog(T1, site="tower-b", assets=(asset("CH-1"),), standards=(standard(),))]
    assert len({first["id"], *(other["id"] for other in others)}) == 5
    assert first["id"].startswith("sc_") and len(first["id"]) <= 64


def test_a_catalog_listing_an_id_twice_is_refused() -> None:
    body = catalog(T1, assets=(asset("CH-1"), asset("CH-1")))
    with pytest.raises(ValueError, match="asset 'CH-1' is listed twice"):
        SiteCatalogIn.model_validate(body)
    body = catalog(T1, standards=(standard(1), standard(2)))
    with pytest.raises(ValueError, match=f"standard '{CHW}' is listed twice"):
        SiteCatalogIn.model_validate(body)


def test_a_newer_agents_catalog_fields_are_counted_and_named(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    body = catalog(T1, assets=(asset("CH-1"),), standards=(standard(),))
    body = {**body, f"gateway_{tag}": "gw-1", "schema_version": CONTRACT_VERSION + 1,
            "assets": [{**body["assets"][0], f"serial_{tag}": "X1"}],
            "standards": [{**body["standards"][0], f"owner_{tag}": "ops"}]}
    before = UNKNOWN_FIELDS.counts()
    answer = api.apply(body)
    names = {f"catalog.gateway_{tag}": 1, f"catalog.assets.serial_{tag}": 1,
             f"catalog.standards.owner_{tag}": 1}
    assert answer["applied"] == 1 and answer["unknown_fields"] == names
    after = UNKNOWN_FIELDS.counts()
    assert {name: after.get(name, 0) - before.get(name, 0) for name in names} == names
    assert [a["id"] for a in get(api, "assets")["items"]] == ["CH-1"]


# --- the standard's text as written ----------------------------------------------------

STANDARDS = """\
# Plant room standards
standards:
  # the chilled water loop
  - id: HVAC-CHW-SUPPLY      # stable across revisions
    version: {version}
    title: Chilled water supply {title}
    applies_to: {{asset_types: [chiller]}}
    metric: chw_supply_temp
    check: {{min: 6, max: 8}}  # degC
    for: 10m

  # a comment about the next one, which is not there
"""


def write_standards(folder: Path, *, version: int = 1, title: str = "6-8 degC") -> None:
    """standards/plant.yaml, replaced whole (a watcher never reads half of it)."""
    (folder / "standards").mkdir(exist_ok=True)
    new = folder / "standards" / "plant.yaml.new"
    new.write_text(STANDARDS.format(version=version, title=title))
    new.replace(folder / "standards" / "plant.yaml")


def write_site(folder: Path, *, version: int = 1, extra: str = "") -> Path:
    write_standards(folder, version=version)
    site = folder / "site.yaml"
    site.write_text(f"""site: {{id: tower-a}}
assets:
  - {{id: CH-1, type: chiller, name: Chiller 1, location: B2, department: engineering,
     tags: {{building: A}}}}
  - {{id: AHU-1, type: ahu}}
standards: [standards/*.yaml]
{extra}""")
    return site


def test_a_standards_text_is_the_yaml_as_written_with_its_comments(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, version=2))
    (entry,) = site_catalog(site, T1.timestamp()).standards
    assert entry["text"] == (
        "id: HVAC-CHW-SUPPLY      # stable across revisions\n"
        "version: 2\n"
        "title: Chilled water supply 6-8 degC\n"
        "applies_to: {asset_types: [chiller]}\n"
        "metric: chw_supply_temp\n"
        "check: {min: 6, max: 8}  # degC\n"
        "for: 10m\n")
    assert site.sources[CHW].line == 4 and site.sources[CHW].file == "standards/plant.yaml"


def test_flow_style_standards_are_cut_out_and_an_alias_falls_back_to_a_dump(
        tmp_path: Path) -> None:
    (tmp_path / "standards").mkdir()
    (tmp_path / "standards" / "s.yaml").write_text(
        "standards: [{id: A, title: a, metric: m, check: &limits {max: 1}},\n"
        "            {id: B, title: b, metric: m, check: *limits}]\n")
    (tmp_path / "site.yaml").write_text("site: {id: tower-a}\nstandards: [standards/*.yaml]\n")
    first, second = site_catalog(load_site(tmp_path / "site.yaml"), T1.timestamp()).standards
    assert first["text"] == "{id: A, title: a, metric: m, check: &limits {max: 1}}\n"
    # `*limits` alone names nothing: the text is the definition's YAML instead
    assert second["text"].startswith("id: B\nversion: 1\ntitle: b\n")
    assert "max: 1.0" in second["text"] and "*limits" not in second["text"]


# --- applying catalogs ----------------------------------------------------------------


def test_a_revised_standard_supersedes_the_version_in_force(api: Api) -> None:
    chillers = (asset("CH-1"), asset("CH-2"))
    api.apply(catalog(T1, assets=chillers, standards=(standard(1),)))
    (item,) = get(api, "standards")["items"]
    assert spans(item) == [(1, T1, None)] and item["in_force"] is True
    api.apply(catalog(T2, assets=chillers, standards=(standard(2, title="revised"),)))
    (item,) = get(api, "standards")["items"]
    assert (item["site_id"], item["id"], item["title"]) == ("tower-a", CHW, "revised")
    assert spans(item) == [(2, T2, None), (1, T1, T2)]
    newest, older = item["versions"]
    assert newest["title"] == "revised" and older["title"] == f"{CHW} v1"
    assert newest["definition"]["version"] == 2 and newest["kind"] == "range"
    assert "version: 2" in newest["text"] and "version: 1" in older["text"]


def test_a_standard_no_longer_listed_leaves_force_and_assets_retire(api: Api) -> None:
    api.apply(catalog(T1, assets=(asset("CH-1"), asset("CH-2")),
                      standards=(standard(), standard(standard_id="ENV-TEMP"))))
    api.apply(catalog(T2, assets=(asset("CH-1"),), standards=(standard(),)))
    by_id = {i["id"]: i for i in get(api, "standards")["items"]}
    assert spans(by_id["ENV-TEMP"]) == [(1, T1, T2)] and by_id["ENV-TEMP"]["in_force"] is False
    assert spans(by_id[CHW]) == [(1, T1, None)]
    assets = {a["id"]: a for a in get(api, "assets")["items"]}
    assert moment(assets["CH-2"]["retired_at"]) == T2 and assets["CH-1"]["retired_at"] is None
    assert [a["id"] for a in get(api, "assets", retired="false")["items"]] == ["CH-1"]
    assert [a["id"] for a in get(api, "assets", retired="true")["items"]] == ["CH-2"]
    # listed again: in service again, first seen as before
    api.apply(catalog(T3, assets=(asset("CH-1"), asset("CH-2", name="Chiller 2")),
                      standards=(standard(),)))
    again = {a["id"]: a for a in get(api, "assets")["items"]}["CH-2"]
    assert again["retired_at"] is None and moment(again["first_seen_at"]) == T1
    assert again["name"] == "Chiller 2" and moment(again["updated_at"]) == T3


def test_replays_change_nothing(api: Api) -> None:
    first = catalog(T1, assets=(asset("CH-1", tags={"building": "A"}),),
                    standards=(standard(),))
    assert api.apply(first)["applied"] == 1
    before = (get(api, "assets"), get(api, "standards"))
    again = api.apply(first)
    assert (again["applied"], again["duplicates"], again["ids"]) == (0, 1, [first["id"]])
    # the same content a week later (an agent restarted) is applied, and changes nothing
    assert api.apply(catalog(T2, assets=(asset("CH-1", tags={"building": "A"}),),
                             standards=(standard(),)))["applied"] == 1
    assert (get(api, "assets"), get(api, "standards")) == before


def test_a_late_older_catalog_retires_nothing(api: Api) -> None:
    api.apply(catalog(T3, assets=(asset("CH-1"),), standards=(standard(2),)))
    api.apply(catalog(T1, assets=(asset("CH-1"), asset("CH-9")), standards=(standard(1),)))
    assets = {a["id"]: a for a in get(api, "assets")["items"]}
    assert moment(assets["CH-1"]["first_seen_at"]) == T1 and assets["CH-1"]["retired_at"] is None
    # CH-9 only the older one lists: it was gone by the next catalog applied
    assert moment(assets["CH-9"]["retired_at"]) == T3
    (item,) = get(api, "standards")["items"]
    assert spans(item) == [(2, T3, None), (1, T1, T3)]


CATALOGS = [
    catalog(T1, assets=(asset("CH-1"), asset("CH-2")), standards=(standard(1),)),
    catalog(T2, assets=(asset("CH-1"),), standards=(standard(2),)),
    catalog(T3, assets=(asset("CH-1"), asset("CH-3")),
            standards=(standard(2), standard(standard_id="ENV-TEMP", kind="stale"))),
]


def test_catalogs_give_the_same_history_whatever_order_they_arrive_in(db: Database) -> None:
    results = []
    for n, order in enumerate(itertools.permutations(CATALOGS)):
        site = f"order-{n}"
        models = [SiteCatalogIn.model_validate({**body, "site_id": site,
                                                "id": f"{body['id'][:40]}-{n}"})
                  for body in order]
        apply_events(db.write, models)
        with db.session() as session:
            assets = list_assets(session, limit=100, cursor=None, site_id=site).items
            standards = list_standards(session, limit=100, cursor=None, site_id=site).items
        results.append(([a.model_dump(exclude={"site_id"}) for a in assets],
                        [s.model_dump(exclude={"site_id"}) for s in standards]))
    assert all(result == results[0] for result in results[1:])
    assets, standards = results[0]
    assert [(a["id"], a["first_seen_at"], a["retired_at"]) for a in assets] == [
        ("CH-1", T1, None), ("CH-2", T1, T2), ("CH-3", T3, None)]
    assert [(s["id"], [(v["version"], v["in_force_from"], v["in_force_until"])
                       for v in s["versions"]]) for s in standards] == [
        ("ENV-TEMP", [(1, T3, None)]), (CHW, [(2, T2, None), (1, T1, T2)])]


# --- reads: scope, NCs, filters, pages --------------------------------------------------


def test_nc_count_is_per_version(api: Api) -> None:
    api.apply(catalog(T1, assets=(asset("CH-1"),), standards=(standard(2),)))
    api.apply(catalog(T2, assets=(asset("CH-1"),), standards=(standard(3),)))
    older = {**engine_event(asset="CH-3"), "standard_version": 2}
    api.apply(engine_event(asset="CH-1"), engine_event(asset="CH-2"), older,
              {**engine_event(asset="CH-4", standard="OTHER")})
    (item,) = get(api, "standards")["items"]
    assert [(v["version"], v["nc_count"]) for v in item["versions"]] == [(3, 2), (2, 1)]


def test_a_scoped_token_sees_its_sites_only(api: Api, db: Database) -> None:
    api.apply(catalog(T1, assets=(asset("CH-1"),), standards=(standard(),)),
              catalog(T1, site="tower-b", assets=(asset("CH-7"),),
                      standards=(standard(standard_id="B-ONLY"),)))
    with db.session() as session:
        scoped = bearer(create_token(session, name="a-reader", role="tracker",
                                     sites=["tower-a"]))
        agent = bearer(create_token(session, name="a-agent", role="agent", sites=["tower-a"]))

    def ids(path: str, **params: Any) -> list[tuple[str, str]]:
        response = api.client.get(f"/api/v1/{path}", params=params, headers=scoped)
        assert response.status_code == 200, response.text
        return [(i["site_id"], i["id"]) for i in response.json()["items"]]

    assert ids("assets") == [("tower-a", "CH-1")]
    assert ids("standards") == [("tower-a", CHW)]
    assert ids("assets", site_id="tower-b") == ids("standards", site_id="tower-b") == []
    assert {i["site_id"] for i in get(api, "assets")["items"]} == {"tower-a", "tower-b"}
    refused = api.client.post("/api/v1/events", headers=agent, json={"events": [
        catalog(T2, site="tower-b", assets=(asset("CH-8"),))]})
    assert refused.status_code == 403 and "tower-b" in refused.json()["detail"]
    assert [a["id"] for a in get(api, "assets", site_id="tower-b")["items"]] == ["CH-7"]


def test_filters_and_pages(api: Api) -> None:
    assets = tuple(asset(f"A-{n:02d}", "ahu" if n % 2 else "chiller",
                         department="engineering" if n < 3 else "facilities")
                   for n in range(7))
    standards = tuple(standard(standard_id=f"S-{n:02d}", kind="stale" if n == 4 else "range")
                      for n in range(5))
    api.apply(catalog(T1, assets=assets, standards=standards))
    for path, limit, expected in (("assets", 3, [a.id for a in assets]),
                                  ("standards", 2, [s.id for s in standards])):
        seen, cursor = [], None
        while True:
            page = get(api, path, limit=limit, **({"cursor": cursor} if cursor else {}))
            assert len(page["items"]) <= limit
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected
    assert [a["id"] for a in get(api, "assets", type="ahu")["items"]] == ["A-01", "A-03",
                                                                         "A-05"]
    assert [a["id"] for a in get(api, "assets", department="engineering",
                                 type="chiller")["items"]] == ["A-00", "A-02"]
    assert [s["id"] for s in get(api, "standards", kind="stale")["items"]] == ["S-04"]
    assert [s["id"] for s in get(api, "standards", standard_id="S-01")["items"]] == ["S-01"]
    for path in ("assets", "standards"):
        response = api.client.get(f"/api/v1/{path}", params={"cursor": "bm90IG91cnM"},
                                  headers=api.headers("engineer"))
        assert response.status_code == 400, response.text
    assert api.client.get("/api/v1/assets").status_code == 401


# --- `patrol run` and a fleet -----------------------------------------------------------


@contextlib.asynccontextmanager
async def running(site: Path, mode: str) -> AsyncIterator[str]:
    """`run_site` as `patrol run|agent|api` would run it; yields the API's URL."""
    stop, ready = asyncio.Event(), asyncio.Event()
    url = ""

    def on_ready(api_url: str) -> None:
        nonlocal url
        url = api_url
        ready.set()

    task = asyncio.create_task(run_site(load_site(site), mode=mode, stop=stop,
                                        on_ready=on_ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what stopped it
    try:
        yield url
    finally:
        stop.set()
        await task


async def wait_for(client: httpx.AsyncClient, path: str, check: Any,
                   patience: float = 60.0) -> dict[str, Any]:
    """GET `path` until `check(body)` holds; AssertionError with the last body if never."""
    deadline = time.monotonic() + patience
    body: Any = None
    while time.monotonic() < deadline:
        response = await client.get(path)
        body = response.json()
        if response.status_code == 200 and check(body):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"GET {path}: condition not met in {patience}s; last: {body}")


def reader_token(url: str) -> str:
    database = Database(url)
    try:
        with database.session() as session:
            return create_token(session, name="reader", role="tracker")
    finally:
        database.close()


def test_patrol_run_lists_the_sites_files_and_a_reload_adds_a_version(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = f"sqlite:///{tmp_path / 'patrol.sqlite'}"
    site = write_site(tmp_path, extra=f"""server: {{listen: 127.0.0.1:{free_port()},
         database: "{database}"}}
buffer: {{path: {tmp_path / 'buffer.sqlite'}}}
""")
    token = reader_token(database)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with running(site, "run") as url, httpx.AsyncClient(
                base_url=url + "/api/v1", headers=bearer(token)) as client:
            assets = await wait_for(client, "/assets", lambda b: len(b["items"]) == 2)
            first = await wait_for(client, "/standards", lambda b: len(b["items"]) == 1)
            write_standards(tmp_path, version=2, title="6-9 degC (revised)")  # the watcher
            second = await wait_for(client, "/standards",
                                    lambda b: len(b["items"][0]["versions"]) == 2)
            return assets, first, second

    caplog.set_level(logging.INFO, logger="patrol")
    assets, first, second = asyncio.run(scenario())
    chiller = {a["id"]: a for a in assets["items"]}["CH-1"]
    assert (chiller["site_id"], chiller["type"], chiller["name"], chiller["location"],
            chiller["department"], chiller["tags"]) == (
        "tower-a", "chiller", "Chiller 1", "B2", "engineering", {"building": "A"})
    (version,) = first["items"][0]["versions"]
    assert version["version"] == 1 and version["in_force_until"] is None
    assert version["text"].startswith("id: HVAC-CHW-SUPPLY      # stable across revisions\n")
    assert version["file"] == "standards/plant.yaml"
    newest, older = second["items"][0]["versions"]
    assert (newest["version"], newest["title"]) == (2, "Chilled water supply 6-9 degC "
                                                       "(revised)")
    assert newest["in_force_until"] is None and older["in_force_until"] == newest[
        "in_force_from"]
    assert sum("site catalog" in r.getMessage() and "queued" in r.getMessage()
               for r in caplog.records) == 2  # at start and after the reload


def test_a_fleet_agent_forwards_its_catalog_to_a_central_api_without_files(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`patrol api` on PostgreSQL holds no standards files; `patrol agent` sends its own."""
    central, edge = tmp_path / "central", tmp_path / "edge"
    central.mkdir()
    edge.mkdir()
    port = free_port()
    (central / "site.yaml").write_text(
        f"site: {{id: hq}}\nserver: {{listen: 127.0.0.1:{port}, database: '{pg_url}'}}\n")
    database = Database(pg_url)
    try:
        with database.session() as session:
            agent_token = create_token(session, name="gw", role="agent", sites=["tower-a"])
    finally:
        database.close()
    reader = reader_token(pg_url)
    monkeypatch.setenv("PATROL_TEST_AGENT_TOKEN", agent_token)
    site = write_site(edge, version=4, extra=f"""forward: {{url: "http://127.0.0.1:{port}",
  token_env: PATROL_TEST_AGENT_TOKEN, max_backoff: 1s}}
buffer: {{path: {edge / 'buffer.sqlite'}}}
""")

    async def scenario() -> dict[str, Any]:
        async with running(central / "site.yaml", "api") as url, running(site, "agent"), \
                httpx.AsyncClient(base_url=url + "/api/v1", headers=bearer(reader)) as client:
            await wait_for(client, "/assets", lambda b: len(b["items"]) == 2)
            return await wait_for(client, "/standards", lambda b: len(b["items"]) == 1)

    (item,) = asyncio.run(scenario())["items"]
    assert (item["site_id"], item["id"]) == ("tower-a", CHW)
    assert [v["version"] for v in item["versions"]] == [4]
    assert "# stable across revisions" in item["versions"][0]["text"]
