"""Site catalogs (rules.events.SiteCatalogIn) into assets and standard versions, and the
reads of both (GET /assets, GET /standards). No HTTP here.

A catalog is the whole of a site's assets and standards at one moment (`at`), sent by its
agent at start and after every reload; each one applied is recorded (`site_catalogs`).
Applying one, in the caller's transaction:

- the newest catalog of a site (its `at` not older than any applied before) is the truth
  now: what it lists is current (a new asset or version starts at its `at`, changed
  wording is taken), what it does not list is retired (an asset's `retired_at`) or leaves
  force (a standard version's `in_force_until`): another version of a standard it lists,
  or a standard it no longer lists;
- an older catalog arriving late (sent again by hand from the dead letters, say) retires
  nothing: it moves first sightings earlier, adds what only it lists (gone by the first
  catalog applied after it, which did not list it), and ends at its own `at` what it
  shows was already gone then. Catalogs of one site give the same assets and versions
  whatever order they arrive in (tests/test_catalog.py), unless a version was rolled
  back and forth: a version's row holds one span.

Replays are no-ops twice over: the catalog's id is recorded like any event's
(api.ingest), and applying the same content again changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select, text, tuple_
from sqlalchemy.orm import Session

from api.errors import BadCursor
from api.schemas import AssetPublic, StandardPublic, StandardVersionPublic
from api.store import AppliedCatalog, Nonconformance, SiteAsset, StandardVersion
from rules.events import SiteCatalogIn

ASSET_FIELDS = ("type", "name", "location", "department", "tags")
WORDING = ("title", "kind", "definition", "text", "file")
"""What a standard version's newest catalog may still correct (a comment, a typo)."""
CATALOG_LOCK = 72438
"""The high half of the PostgreSQL advisory lock key a site's catalogs take."""


# --- applying a catalog --------------------------------------------------------------


def apply_catalog(session: Session, catalog: SiteCatalogIn) -> None:
    """Apply one site catalog in the caller's transaction (module docstring)."""
    site, at = catalog.site_id, catalog.at.astimezone(UTC)
    _lock_site(session, site)
    newest = session.scalar(select(func.max(AppliedCatalog.at))
                            .where(AppliedCatalog.site_id == site))
    late = newest is not None and at < newest
    # late: the first catalog applied after it did not list what is new here
    left = session.scalar(select(func.min(AppliedCatalog.at)).where(
        AppliedCatalog.site_id == site, AppliedCatalog.at > at)) if late else None
    session.add(AppliedCatalog(site_id=site, id=catalog.id, at=at,
                               assets=len(catalog.assets), standards=len(catalog.standards)))
    _apply_assets(session, catalog, at, late, left)
    _apply_standards(session, catalog, at, late, left)


def _lock_site(session: Session, site_id: str) -> None:
    """Catalogs of one site apply one at a time (on SQLite the write lock does it)."""
    if session.get_bind().dialect.name == "postgresql":
        key = (CATALOG_LOCK << 32) | zlib.crc32(site_id.encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _apply_assets(session: Session, catalog: SiteCatalogIn, at: datetime, late: bool,
                  left: datetime | None) -> None:
    rows = {row.id: row for row in session.scalars(
        select(SiteAsset).where(SiteAsset.site_id == catalog.site_id))}
    for item in catalog.assets:
        fields = {name: getattr(item, name) for name in ASSET_FIELDS}
        row = rows.pop(item.id, None)
        if row is None:
            session.add(SiteAsset(site_id=catalog.site_id, id=item.id, **fields,
                                  first_seen_at=at, updated_at=at, retired_at=left))
            continue
        same = all(getattr(row, name) == value for name, value in fields.items())
        row.first_seen_at = min(row.first_seen_at, at)
        if late:
            if same and at < row.updated_at:  # so it read since then
                row.updated_at = at
            continue
        if not same:
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = at
        row.retired_at = None
    for row in rows.values():  # not listed
        if not late and row.retired_at is None:
            row.retired_at = at
        elif late and row.first_seen_at < at < (row.retired_at or at):
            row.retired_at = at  # late news: it had left by then


def _apply_standards(session: Session, catalog: SiteCatalogIn, at: datetime, late: bool,
                     left: datetime | None) -> None:
    rows = {(row.standard_id, row.version): row for row in session.scalars(
        select(StandardVersion).where(StandardVersion.site_id == catalog.site_id))}
    for item in catalog.standards:
        wording = {name: getattr(item, name) for name in WORDING}
        row = rows.pop((item.id, item.version), None)
        if row is None:
            session.add(StandardVersion(site_id=catalog.site_id, standard_id=item.id,
                                        version=item.version, **wording, in_force_from=at,
                                        in_force_until=left))
            continue
        row.in_force_from = min(row.in_force_from, at)
        if not late:
            for name, value in wording.items():
                if getattr(row, name) != value:
                    setattr(row, name, value)
            row.in_force_until = None
    for row in rows.values():  # not listed: another version of it, or no longer any
        if not late and row.in_force_until is None:
            row.in_force_until = at
        elif late and row.in_force_from < at < (row.in_force_until or at):
            row.in_force_until = at  # late news: superseded by then


# --- reads ---------------------------------------------------------------------------


T = TypeVar("T")
Q = TypeVar("Q", bound=Select[Any])


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def list_assets(session: Session, *, limit: int, cursor: str | None,
                site_id: str | None = None, asset_type: str | None = None,
                department: str | None = None, retired: bool | None = None,
                sites: Collection[str] | None = None) -> Page[AssetPublic]:
    """Assets in (site, id) order, `limit` at a time; `sites` None: every site."""
    query = _scoped(select(SiteAsset), SiteAsset.site_id, site_id, sites)
    if asset_type is not None:
        query = query.where(SiteAsset.type == asset_type)
    if department is not None:
        query = query.where(SiteAsset.department == department)
    if retired is not None:
        query = query.where(SiteAsset.retired_at.is_not(None) if retired
                            else SiteAsset.retired_at.is_(None))
    if cursor:
        query = query.where(tuple_(SiteAsset.site_id, SiteAsset.id) > tuple_(*decode(cursor)))
    rows = list(session.scalars(query.order_by(SiteAsset.site_id, SiteAsset.id)
                                .limit(limit + 1)))
    items = [AssetPublic(site_id=row.site_id, id=row.id, **{
        name: getattr(row, name) for name in ASSET_FIELDS},
        first_seen_at=row.first_seen_at, updated_at=row.updated_at,
        retired_at=row.retired_at) for row in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return Page(items, encode((last.site_id, last.id)) if last else None)


def list_standards(session: Session, *, limit: int, cursor: str | None,
                   site_id: str | None = None, standard_id: str | None = None,
                   kind: str | None = None, sites: Collection[str] | None = None
                   ) -> Page[StandardPublic]:
    """Standards in (site, id) order, `limit` at a time, each with every version seen
    (newest first) and the NCs judged by each: three statements whatever the page."""
    version = StandardVersion
    query = _scoped(select(version.site_id, version.standard_id), version.site_id, site_id,
                    sites)
    if standard_id is not None:
        query = query.where(version.standard_id == standard_id)
    if kind is not None:  # a standard with a version of this kind
        query = query.where(version.kind == kind)
    if cursor:
        query = query.where(tuple_(version.site_id, version.standard_id)
                            > tuple_(*decode(cursor)))
    keys = [(row[0], row[1]) for row in session.execute(
        query.group_by(version.site_id, version.standard_id)
        .order_by(version.site_id, version.standard_id).limit(limit + 1))]
    next_cursor = encode(keys[limit - 1]) if len(keys) > limit else None
    keys = keys[:limit]
    if not keys:
        return Page([], next_cursor)
    versions: dict[tuple[str, str], list[StandardVersion]] = defaultdict(list)
    for row in session.scalars(select(version).where(
            tuple_(version.site_id, version.standard_id).in_(keys))
            .order_by(version.site_id, version.standard_id, version.version.desc())):
        versions[(row.site_id, row.standard_id)].append(row)
    counts = _nc_counts(session, keys)
    return Page([_standard(key, versions[key], counts) for key in keys], next_cursor)


def _nc_counts(session: Session, keys: Sequence[tuple[str, str]]
               ) -> dict[tuple[str, str, int | None], int]:
    """NCs per (site, standard, version) of the page's standards: one grouped statement
    over `ix_nc_standard_version`."""
    nc = Nonconformance
    query = (select(nc.site_id, nc.standard_id, nc.standard_version, func.count())
             .where(tuple_(nc.site_id, nc.standard_id).in_(keys))
             .group_by(nc.site_id, nc.standard_id, nc.standard_version))
    return {(site, standard, number): count
            for site, standard, number, count in session.execute(query)}


def _standard(key: tuple[str, str], rows: list[StandardVersion],
              counts: dict[tuple[str, str, int | None], int]) -> StandardPublic:
    site_id, standard_id = key
    return StandardPublic(
        site_id=site_id, id=standard_id, title=rows[0].title,
        in_force=any(row.in_force_until is None for row in rows),
        versions=[StandardVersionPublic(
            version=row.version, title=row.title, kind=row.kind, file=row.file,
            in_force_from=row.in_force_from, in_force_until=row.in_force_until,
            text=row.text, definition=row.definition,
            nc_count=counts.get((site_id, standard_id, row.version), 0)) for row in rows])


def _scoped(query: Q, column: Any, site_id: str | None,
            sites: Collection[str] | None) -> Q:
    """The query within the caller's sites (SPEC 7.1) and the `site_id` asked for."""
    if sites is not None:
        query = query.where(column.in_(sorted(sites)))
    if site_id is not None:
        query = query.where(column == site_id)
    return query


def encode(key: tuple[str, str]) -> str:
    """A keyset cursor: the (site, id) of the last row of a page."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode(cursor: str) -> tuple[str, str]:
    """The key an `encode` cursor holds; BadCursor for anything else."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadCursor("cursor is not one this API gave out") from None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise BadCursor("cursor is not one this API gave out")
    return key[0], key[1]
