"""The NC register as CSV (SPEC 7.3): the monthly file quality staff keep, with the JSON
list's filters and site scope, every matching NC rather than one page.

Made for Excel, which opens it by double-click: UTF-8 with a byte order mark (without
it Excel reads Chinese titles as mojibake), times in ISO 8601 UTC, and text cells that
would start a formula (`=`, `+`, `-`, `@`, tab, carriage return) prefixed with `'` so a
title or note written by anyone cannot run as one (CSV injection).

Bounded like every read: at most MAX_ROWS rows (more is refused before the first byte,
asking for a narrower window), read PAGE rows at a time by keyset, each page in its own
short session, so memory stays flat and no transaction stays open while a slow client
reads. Rows changed between pages show as they were when their page was read. No HTTP
here: a refusal is api.errors.Invalid.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import defer

from api.auth import SITE_ID
from api.errors import Invalid
from api.service import Filters, filtered_ncs, is_overdue, older_than
from api.store import Nonconformance, SessionFactory, format_nc_id

MAX_ROWS = 100_000
"""Rows one file holds: a large site's several years; more asks for a narrower window."""
PAGE = 1000
"""Rows read per query (and session)."""
BOM = "\ufeff"

COLUMNS = (
    "id", "site_id", "asset_id", "asset_type", "standard_id", "standard_version", "metric",
    "title", "clause", "category", "severity", "department", "assignee", "state",
    "condition", "detected_at", "cleared_at", "due_at", "rectified_at", "closed_at",
    "overdue", "occurrences", "reopen_count", "recurring", "source", "description",
    "root_cause", "root_cause_category", "rectification_action", "rectified_by",
    "verification_result", "verification_method", "verified_by", "verified_at",
    "external_ref")
"""The register's header row, in order: NC fields by their API names, and the parts of
the rectification and verification a register reads as columns."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes Excel (or LibreOffice) read a cell as a formula (OWASP, CSV injection)."""
HEAVY = (Nonconformance.evidence, Nonconformance.standard_info,
         Nonconformance.verify_progress)
"""Columns the register does not show: not loaded (evidence holds readings)."""


def check_size(factory: SessionFactory, filters: Filters, now: datetime, *,
               max_rows: int = MAX_ROWS) -> int:
    """How many NCs the register will hold; Invalid when over `max_rows`. Counts at most
    `max_rows` + 1 rows."""
    matching = filtered_ncs(filters, now).with_only_columns(Nonconformance.pk)
    with factory() as session:
        count = session.scalar(select(func.count()).select_from(
            matching.order_by(None).limit(max_rows + 1).subquery())) or 0
    if count > max_rows:
        raise Invalid(f"more than {max_rows:,} nonconformances match: narrow the window "
                      "(from, to) or the filters, and fetch it in parts")
    return count


def lines(factory: SessionFactory, filters: Filters, now: datetime, *, page: int = PAGE,
          max_rows: int = MAX_ROWS) -> Iterator[bytes]:
    """The register as UTF-8 chunks: the BOM and header, then one chunk per `page` rows,
    newest detected first (the JSON list's order); at most `max_rows` rows (check_size
    refused more beforehand; NCs raised since are cut, not the memory bound)."""
    yield (BOM + _csv([COLUMNS])).encode("utf-8")
    query = filtered_ncs(filters, now).options(*(defer(column) for column in HEAVY))
    sent, last = 0, None
    while sent < max_rows:
        bounded = query if last is None else older_than(query, *last)
        with factory() as session:
            rows = list(session.scalars(bounded.limit(min(page, max_rows - sent))))
        if not rows:
            return
        yield _csv(row(nc, now) for nc in rows).encode("utf-8")
        sent += len(rows)
        last = (rows[-1].detected_at, rows[-1].pk)
        if len(rows) < page:
            return


def row(nc: Nonconformance, now: datetime) -> list[str]:
    """One NC as the register's cells, in COLUMNS order, safe for a spreadsheet."""
    rectification = nc.rectification or {}
    verification = nc.verification or {}
    window = verification.get("window")
    # by a person: `at`; by sensor: the end of the window of compliant readings
    verified_at = _moment(verification.get("at") or (window.get("to") if isinstance(
        window, dict) else None))
    category = nc.root_cause_category or ("unknown" if nc.rectification else None)
    values: list[Any] = [
        format_nc_id(nc.pk), nc.site_id, nc.asset_id, nc.asset_type, nc.standard_id,
        nc.standard_version, nc.metric, nc.title, nc.clause, nc.category, nc.severity,
        nc.department, nc.assignee, nc.state, nc.condition, nc.detected_at, nc.cleared_at,
        nc.due_at, nc.rectified_at, nc.closed_at, is_overdue(nc, now), nc.occurrences,
        nc.reopen_count, nc.recurring, nc.source, nc.description,
        rectification.get("root_cause"), category, rectification.get("action"),
        rectification.get("by"), verification.get("result"), verification.get("method"),
        verification.get("by"), verified_at, nc.external_ref]
    return [cell(value) for value in values]


def cell(value: Any) -> str:
    """A value as register text: times ISO 8601 UTC (`Z`), booleans true/false, nothing
    as empty, text defused when a spreadsheet would take it for a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return str(value)


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _moment(text: object) -> datetime | str | None:
    """A time as Patrol writes them in an NC's JSON (`2026-11-25T08:00:00+00:00`);
    anything else as it is (a cell shows it)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    return moment if moment.tzinfo is not None else text


def filename(filters: Filters, today: date) -> str:
    """`nonconformances-<site>-<date>.csv`: the site the filter or the token's one site
    names, else `all`."""
    sites = {filters.site_id} if filters.site_id else filters.sites or set()
    site = next(iter(sites)) if len(sites) == 1 else "all"
    return f"nonconformances-{site if SITE_ID.match(site) else 'all'}-{today.isoformat()}.csv"


def _csv(rows: Any) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()
