"""Edge agents' heartbeats, and the gateway-offline NC (SPEC 7.5).

A gateway silent longer than `server.gateway_offline_after` raises an NC on the asset
`gateway:<gateway_id>` under the built-in standard PATROL-GATEWAY-OFFLINE; its next
heartbeat closes it. Both travel as engine events through `api.ingest.apply_event`, so
the NC goes through the one lifecycle (history, feed, webhooks, notifications) like any
other, and both carry ids made from the silence they are about: two API replicas that
notice the same silence raise one NC, and a heartbeat applied twice closes it once.

Silence is counted from the later of the last heartbeat and this API's start: while the
API itself was down no gateway could reach it, and a restart must not raise an NC for
every gateway of the fleet before their next heartbeat had a chance to arrive.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.ingest import apply_event
from api.schemas import BufferStatus, GatewayPublic, HeartbeatIn, SourceStatus
from api.service import SYSTEM_ACTOR, open_nc
from api.store import Gateway, SessionFactory, format_nc_id
from rules.events import EventIn, StandardInfo

log = logging.getLogger("patrol.api.gateways")

STANDARD_ID = "PATROL-GATEWAY-OFFLINE"
KIND = "gateway_offline"
OFFLINE_STANDARD = StandardInfo(
    title="Gateway offline: no heartbeat from the edge agent", clause="SPEC 7.5",
    category="equipment", severity="major", on_recovery="close", kind=KIND)
"""The built-in standard of the gateway-offline NC: closes itself when heartbeats return."""
BATCH = 200


def asset_of(gateway_id: str) -> str:
    return f"gateway:{gateway_id}"


def _event_id(kind: str, site_id: str, gateway_id: str, since: datetime) -> str:
    """The same id for the same silence, whichever replica or retry makes it (<= 64)."""
    key = f"{site_id}\x00{gateway_id}\x00{since.astimezone(UTC).isoformat()}"
    return f"gw-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def _event(kind: str, gateway: Gateway, since: datetime, at: datetime) -> EventIn:
    silent = (at - since).total_seconds()
    return EventIn(
        id=_event_id(kind, gateway.site_id, gateway.gateway_id, since),
        type="violation_started" if kind == "offline" else "violation_cleared",
        site_id=gateway.site_id, asset_id=asset_of(gateway.gateway_id),
        standard_id=STANDARD_ID, metric="heartbeat", episode_start=since, at=at,
        standard=OFFLINE_STANDARD, asset={"type": "gateway", "name": gateway.gateway_id},
        evidence={"last_heartbeat_at": since.isoformat(), "silent_for": round(silent, 1),
                  "version": gateway.version})


def record_heartbeat(session: Session, beat: HeartbeatIn, now: datetime) -> str | None:
    """Keep `beat` as its gateway's last; returns the id of the gateway-offline NC it
    closed (None when the gateway was not offline, or its NC was already handled)."""
    gateway = session.scalar(select(Gateway).where(
        Gateway.site_id == beat.site_id, Gateway.gateway_id == beat.gateway_id)
        .with_for_update())
    if gateway is None:
        gateway = Gateway(site_id=beat.site_id, gateway_id=beat.gateway_id)
        session.add(gateway)
    gateway.version = beat.version
    gateway.sent_at = beat.at
    gateway.received_at = now
    gateway.started_at = beat.started_at
    gateway.clock_offset = beat.clock_offset
    gateway.status = {"buffer": beat.buffer.model_dump(mode="json"),
                      "sources": {name: source.model_dump(mode="json")
                                  for name, source in beat.sources.items()}}
    closed = None
    if gateway.offline_since is not None:
        nc = open_nc(session, beat.site_id, asset_of(beat.gateway_id), STANDARD_ID)
        apply_event(session, _event("online", gateway, gateway.offline_since, now),
                    SYSTEM_ACTOR)
        if nc is not None and nc.state == "closed":
            closed = format_nc_id(nc.pk)
        log.info("gateway %s of site %s is back after %.0fs of silence", beat.gateway_id,
                 beat.site_id, (now - gateway.offline_since).total_seconds())
        gateway.offline_since = None
    return closed


def mark_offline(factory: SessionFactory, after: timedelta, started: datetime,
                 now: datetime | None = None) -> int:
    """Raise the gateway-offline NC of each gateway silent longer than `after` (counted
    from `started` at the earliest); returns how many became offline."""
    now = now or datetime.now(UTC)
    if now - started < after:
        return 0
    with factory() as session:
        silent = list(session.scalars(
            select(Gateway).where(Gateway.offline_since.is_(None),
                                  Gateway.received_at < now - after)
            .order_by(Gateway.received_at).limit(BATCH).with_for_update(skip_locked=True)))
        for gateway in silent:
            apply_event(session, _event("offline", gateway, gateway.received_at, now),
                        SYSTEM_ACTOR)
            gateway.offline_since = gateway.received_at
            log.warning("gateway %s of site %s is offline: no heartbeat since %s",
                        gateway.gateway_id, gateway.site_id, gateway.received_at.isoformat())
        session.commit()
    return len(silent)


def list_gateways(session: Session, now: datetime, offline_after: timedelta,
                  sites: Collection[str] | None = None, site_id: str | None = None
                  ) -> list[GatewayPublic]:
    """Every gateway's last heartbeat, offline ones first, then by site and id."""
    query = select(Gateway)
    if sites is not None:
        query = query.where(Gateway.site_id.in_(sorted(sites)))
    if site_id is not None:
        query = query.where(Gateway.site_id == site_id)
    gateways = list(session.scalars(query.order_by(Gateway.site_id, Gateway.gateway_id)))
    items = []
    for gateway in gateways:
        nc = open_nc(session, gateway.site_id, asset_of(gateway.gateway_id), STANDARD_ID) \
            if gateway.offline_since is not None else None
        silent = (now - gateway.received_at).total_seconds()
        offline = gateway.offline_since is not None or silent > offline_after.total_seconds()
        status = gateway.status or {}
        items.append(GatewayPublic(
            site_id=gateway.site_id, gateway_id=gateway.gateway_id,
            status="offline" if offline else "online", version=gateway.version,
            last_heartbeat_at=gateway.received_at, silent_for=round(silent, 1),
            sent_at=gateway.sent_at, started_at=gateway.started_at,
            uptime=(now - gateway.started_at).total_seconds() if gateway.started_at else None,
            clock_offset=gateway.clock_offset, offline_since=gateway.offline_since,
            offline_nc=format_nc_id(nc.pk) if nc is not None else None,
            buffer=BufferStatus.model_validate(status.get("buffer") or {}),
            sources={name: SourceStatus.model_validate(value)
                     for name, value in (status.get("sources") or {}).items()}))
    items.sort(key=lambda item: item.status != "offline")  # stable: offline first
    return items
