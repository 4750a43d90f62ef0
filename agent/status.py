"""`patrol status -c site.yaml`: one screen on a gateway, for the person at the cabinet.

What the buffer holds is read from the buffer file itself (read-only, beside a running
agent); when each source last gave readings and the open NCs come from the API that
holds them: the central API's `GET /gateways` and `GET /nonconformances` for an edge
agent (`forward:`), the site's own NC database for `patrol run`. Whatever cannot be
reached is said in its line; the rest is still shown.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent.metrics import age_text, read_buffer
from common.secrets import read_secret
from common.urls import url_for_log
from common.vocabulary import OPEN_STATES

if TYPE_CHECKING:
    from agent.site import Site


def database_for_log(url: str) -> str:
    """A database URL as logs may show it (site.yaml never holds its password)."""
    return url if url.startswith("sqlite") else url_for_log(url)


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def buffer_lines(site: Site, now: float) -> list[str]:
    config = site.config
    path = config.buffer.path
    if not path.exists():
        return [f"buffer  {path}: not there yet (the agent has not run here)"]
    try:
        figures = read_buffer(path)
    except sqlite3.Error as exc:
        return [f"buffer  {path}: cannot be read: {exc}"]
    lines = [f"buffer  {path}: {_size(figures.used_bytes)} of {_size(config.buffer.max_size)}; "
             f"{figures.readings} readings and {figures.events} NC events waiting"]
    if config.influxdb is not None:
        oldest = figures.oldest_ts
        lag = f"{age_text(now - oldest)} behind" if oldest is not None else "up to date"
        lines.append(f"tsdb    {url_for_log(config.influxdb.url)} ({config.influxdb.api}, "
                     f"bucket {config.influxdb.bucket}): {lag}")
    else:
        lines.append("tsdb    none configured: readings stay in the buffer")
    if figures.dead_letters or figures.dropped:
        lines.append(f"        dead letters: {figures.dead_letters} (readings and events "
                     f"refused for good); dropped for max_size: {figures.dropped} readings")
    return lines


def _http(url: str, token: str | None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read(4 << 20))


def _from_api(site: Site) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    """Gateways and open NCs by state from the central API, and where they came from."""
    forward = site.config.forward
    assert forward is not None
    base = forward.url.rstrip("/") + "/api/v1"
    token = read_secret(forward.token_env, forward.token_file)
    site_id = urllib.parse.quote(site.id)
    gateways = _http(f"{base}/gateways?site_id={site_id}", token)["items"]
    counts = {}
    for state in OPEN_STATES:
        page = _http(f"{base}/nonconformances?site_id={site_id}&state={state}&limit=500",
                     token)
        counts[state] = len(page["items"]) + (1 if page.get("next_cursor") else 0)
    return gateways, counts, f"central {url_for_log(forward.url)}"


def _from_database(site: Site) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    from sqlalchemy import func, select

    from api.gateways import list_gateways
    from api.store import Nonconformance, open_database

    server = site.config.server
    database = open_database(server)
    try:
        with database.session() as session:
            gateways = [g.model_dump(mode="json") for g in list_gateways(
                session, datetime.now(UTC), timedelta(seconds=server.gateway_offline_after),
                site_id=site.id)]
            counts = dict(session.execute(
                select(Nonconformance.state, func.count()).where(
                    Nonconformance.site_id == site.id,
                    Nonconformance.state.in_(OPEN_STATES))
                .group_by(Nonconformance.state)).tuples().all())
    finally:
        database.close()
    return gateways, counts, f"database {database_for_log(server.database)}"


def status_lines(site: Site) -> list[str]:
    """The screen, line by line."""
    from agent.heartbeat import default_gateway_id

    config = site.config
    now = time.time()
    forward = config.forward
    gateway_id = (forward.gateway_id if forward else None) or default_gateway_id()
    lines = [f"site    {site.id} ({site.path}), gateway {gateway_id}, "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"]
    try:
        gateways, counts, origin = (_from_api(site) if forward is not None
                                    else _from_database(site))
    except (urllib.error.URLError, OSError, ValueError, RuntimeError) as exc:
        where = url_for_log(forward.url) if forward else \
            database_for_log(config.server.database)
        gateways, counts, origin = [], {}, ""
        problem = f"{where} cannot be asked ({getattr(exc, 'reason', exc)}): sources and NCs " \
                  "unknown"
    else:
        problem = ""
    mine = next((g for g in gateways if g["gateway_id"] == gateway_id), None)
    lines += _source_lines(site, mine, now)
    lines += buffer_lines(site, now)
    if problem:
        lines.append(f"api     {problem}")
        return lines
    if mine is None:
        lines.append(f"api     {origin}: no heartbeat from {gateway_id} yet")
    else:
        offset = mine.get("clock_offset")
        lines.append(f"api     {origin}: {mine['status']}, last heartbeat "
                     f"{age_text(mine['silent_for'])} ago"
                     + (f", clock {offset:+.2f} s off the API's" if offset is not None else ""))
    total = sum(counts.values())
    by_state = ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in OPEN_STATES
                         if counts.get(s))
    lines.append(f"ncs     {total} open" + (f" ({by_state})" if by_state else ""))
    return lines


def _source_lines(site: Site, gateway: dict[str, Any] | None, now: float) -> list[str]:
    config = site.config
    sources = (gateway or {}).get("sources") or {}
    lines = []

    def last(name: str) -> str:
        seen = sources.get(name) or {}
        at = seen.get("last_at")
        if not at:
            return "no reading yet" if gateway else "last reading unknown"
        ago = now - datetime.fromisoformat(at).timestamp()
        return f"last reading {age_text(ago)} ago, {seen.get('readings', 0)} since start"

    for device in config.modbus.devices if config.modbus else ():
        where = (f"{device.host}:{device.port}" if device.transport != "rtu"
                 else str(device.serial_port))
        lines.append(f"source  modbus {device.name} ({where}, unit {device.unit_id}, "
                     f"{len(device.points)} points): {last(f'modbus:{device.name}')}")
    if config.mqtt and config.mqtt.subscriptions:
        lines.append(f"source  mqtt {url_for_log(config.mqtt.url)} "
                     f"({len(config.mqtt.subscriptions)} subscriptions): {last('mqtt')}")
    return lines
