"""The console's pages (SPEC 7.4): sign-in and sign-out, the language, the NC list, an
NC's page with its actions, the compliance board, the KPI report, inspections,
notifications and silences, and an administrator's page of users.
Every page but sign-in needs a signed-in person; every form carries the session's CSRF
token; what a page shows and does goes through the same service functions and scope
(`Principal`) as the REST API.

Forms are read as `application/x-www-form-urlencoded` here (no multipart dependency):
the console never uploads files.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.console import users
from api.console.i18n import LANGUAGES, from_header, texts
from api.errors import BadCursor, Forbidden, Invalid, NotFound, PatrolError
from api.gateways import list_gateways
from api.inspections import service as inspection_service
from api.lifecycle import CHANNEL, perform, set_external_ref
from api.notify import history as notify_history
from api.notify import silences
from api.reports import (
    CSV_TYPE,
    XLSX_TYPE,
    compliance_report,
    moment,
    to_csv,
    to_xlsx,
    window_of,
)
from api.schemas import ActionBody
from api.service import (
    Filters,
    compliance_query,
    history_page,
    list_ncs,
    to_public,
    visible_nc,
)
from api.store import Database, Nonconformance, User, format_nc_id, parse_nc_id
from api.workflow import ACTIONS, allowed_actions
from common.vocabulary import NC_STATES, OPEN_STATES

router = APIRouter(include_in_schema=False)
T = TypeVar("T")

SESSION_COOKIE = "patrol_session"
LOGIN_COOKIE = "patrol_login"
"""A random value the sign-in form repeats: a form posted from elsewhere lacks it."""
PAGE = 50
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
}
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]), auto_reload=False)


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _in_db(request: Request, work: Callable[[Any], T]) -> T:
    """`work(session)` in one write transaction, committed, off the event loop; NC changes
    made in it are recorded as made in the console (api.lifecycle.CHANNEL)."""

    def run() -> T:
        with _db(request).write() as session:
            session.info[CHANNEL] = "console"
            result = work(session)
            session.commit()
            return result

    return await run_in_threadpool(run)


async def _signed(request: Request) -> users.Signed | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    return await _in_db(request, lambda session: users.resume(session, cookie))


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != \
            "application/x-www-form-urlencoded":
        raise Invalid("a console form is sent as application/x-www-form-urlencoded")
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[0] for key, values in parse_qs(body).items()}


def _render(template: str, *, status: int = 200, lang: str | None = None,
            signed: users.Signed | None = None, **values: Any) -> HTMLResponse:
    """A page in `lang`, by default the signed-in person's language."""
    lang = lang or (signed.user.language if signed is not None else "en")
    html = TEMPLATES.get_template(template).render(t=texts(lang), lang=lang, signed=signed,
                                               **values)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _clock(request: Request, pattern: str = "%Y-%m-%d %H:%M") -> Callable[[datetime], str]:
    """A page's `local`: a time as the site's clock shows it."""
    tz = ZoneInfo(request.app.state.timezone)
    return lambda moment: moment.astimezone(tz).strftime(pattern)


def _status_of(refusal: PatrolError) -> int:
    """The status the API answers the same refusal with (api.app.STATUS)."""
    from api.app import STATUS  # api.app mounts this module

    return next(code for kind, code in STATUS.items() if isinstance(refusal, kind))


def _secure(request: Request) -> bool:
    return (request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto", "").lower() == "https")


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ncs"


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse("/ncs" if await _signed(request) else "/login", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = _render("login.html", lang=from_header(request.headers.get("accept-language")),
                       csrf=nonce, next=_safe_next(next), name="", reason=None)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict",
                        secure=_secure(request), path="/login")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    lang = from_header(request.headers.get("accept-language"))
    name, target = form.get("name", "")[:64], _safe_next(form.get("next"))
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not secrets.compare_digest(expected, form.get("csrf", "")):
        return _render("login.html", status=403, lang=lang, csrf=expected or "",
                       next=target, name=name, reason="expired")

    def sign_in(session: Any) -> tuple[str | None, str]:
        try:
            user = users.sign_in(session, name, form.get("password", ""))
        except users.SignInRefused as refusal:
            text = str(refusal)
            return None, ("locked" if "later" in text else
                          "disabled" if "disabled" in text else "wrong")
        return users.open_session(session, user), ""

    cookie, reason = await _in_db(request, sign_in)
    if cookie is None:
        return _render("login.html", status=401, lang=lang, csrf=expected, next=target,
                       name=name, reason=reason)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="strict",
                        secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


class Refused(Exception):
    """A console request answered before its route's work: to the sign-in page without a
    session, 403 for a form without the session's CSRF token. Raised by `_signed_in` and
    `_checked`, so that each route begins with one line; api.console.mount answers with
    `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def _signed_in(request: Request) -> users.Signed:
    """The signed-in person (else `Refused`, to the sign-in page and back)."""
    signed = await _signed(request)
    if signed is None:
        raise Refused(_to_login(request))
    return signed


async def _checked(request: Request) -> tuple[users.Signed, dict[str, str]]:
    """The signed-in person and the form of a console POST (else `Refused`)."""
    signed = await _signed_in(request)
    form = await _form(request)
    if not users.csrf_ok(signed, form.get("csrf")):
        t = texts(signed.user.language)
        raise Refused(HTMLResponse(t["forbidden"], status_code=403, headers=HEADERS))
    return signed, form


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _checked(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    await _in_db(request, lambda session: users.close_session(session, cookie))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language")
async def language(request: Request) -> Response:
    signed, form = await _checked(request)
    chosen = form.get("language")
    if chosen in LANGUAGES:
        def choose(session: Any) -> None:
            user = session.get(type(signed.user), signed.user.id)
            user.language = chosen
        await _in_db(request, choose)
    return RedirectResponse(request.headers.get("referer") or "/ncs", status_code=303)


FILTERS = ("text", "state", "severity", "asset_id", "standard_id", "department", "overdue",
           "recurring")
ALLOWED = {"state": NC_STATES, "severity": ("critical", "major", "minor")}
"""A filter's values, where it has a few: another one is ignored, as a link may be old."""


@router.get("/ncs")
async def nc_list(request: Request) -> Response:
    """The NC list with the API's filters, kept in the URL, newest first, paged by the
    API's cursor."""
    signed = await _signed_in(request)
    query = request.query_params
    chosen: dict[str, Any] = {}
    for name in FILTERS:
        value = query.get(name, "").strip()[:128]
        if not value:
            continue
        if name in ("overdue", "recurring"):
            chosen[name] = value == "true"
        elif value in ALLOWED.get(name, (value,)):
            chosen[name] = value
    filters = Filters(sites=signed.principal.sites, **chosen)
    now = datetime.now(UTC)
    cursor = query.get("cursor") or None

    def read(session: Any) -> tuple[list[Any], str | None]:
        try:
            rows, next_cursor = list_ncs(session, filters, limit=PAGE, cursor=cursor, now=now)
        except BadCursor:
            rows, next_cursor = list_ncs(session, filters, limit=PAGE, cursor=None, now=now)
        return [to_public(nc, now) for nc in rows], next_cursor

    rows, next_cursor = await _in_db(request, read)
    kept = {k: v for k, v in query.items() if k in FILTERS and v}
    return _render("ncs.html", signed=signed, rows=rows,
                   filters=filters, next_cursor=next_cursor,
                   next_url=f"/ncs?{urlencode({**kept, 'cursor': next_cursor or ''})}",
                   local=_clock(request))


@dataclass(frozen=True, slots=True)
class Offered:
    """An action the NC's state allows, its form's fields, and whether this person's role
    may take it (a disabled form when not: the server refuses it anyway)."""

    name: str
    fields: tuple[str, ...]
    required: tuple[str, ...]
    may: bool


FORM_FIELDS = {"acknowledge": ("note",), "start": ("note",),
               "rectify": ("action", "root_cause", "root_cause_category", "note"),
               "verify": ("result", "note"), "cancel": ("reason",), "reopen": ("reason",),
               "assign": ("assignee", "note")}


def _nc_page(request: Request, signed: users.Signed, nc_id: str, *, status: int = 200,
             refusal: str | None = None) -> Callable[[Any], Response]:
    def read(session: Any) -> Response:
        nc = visible_nc(session, nc_id, signed.principal)
        entries, _ = history_page(session, nc.pk, limit=500, cursor=None)
        public = to_public(nc, datetime.now(UTC))
        offered = [Offered(name, FORM_FIELDS[name], ACTIONS[name].required,
                           signed.principal.may(*ACTIONS[name].roles))
                   for name in allowed_actions(public.state)]
        # during verification: the trace so far, or the one the verification kept
        verifying = ((nc.verification or {}).get("readings")
                     or (nc.verify_progress or {}).get("readings") or [])
        return _render("nc.html", status=status, signed=signed,
                       nc=public, history=entries, actions=offered, refusal=refusal,
                       verifying=verifying, may_ref=signed.principal.may("tracker"),
                       categories=request.app.state.root_cause_categories,
                       tz=request.app.state.timezone, parse=datetime.fromisoformat,
                       local=_clock(request))
    return read


@router.get("/ncs/{nc_id}")
async def nc_page(request: Request, nc_id: str) -> Response:
    """One NC: its summary, the actions its state allows (those the person's role may not
    take shown disabled), and its history."""
    signed = await _signed_in(request)
    try:
        return await _in_db(request, _nc_page(request, signed, nc_id[:64]))
    except NotFound:
        return HTMLResponse(texts(signed.user.language)["none"], status_code=404,
                            headers=HEADERS)


@router.post("/ncs/{nc_id}/external_ref")
async def nc_external_ref(request: Request, nc_id: str) -> Response:
    """The tracker's ticket id, as `PUT /api/v1/nonconformances/{id}/external_ref` sets it."""
    signed, form = await _checked(request)
    value = form.get("external_ref", "").strip()[:256] or None

    def save(session: Any) -> None:
        if not signed.principal.may("tracker"):
            raise Forbidden(f"role {signed.principal.role!r} may not set the external "
                            "reference; needs tracker")
        set_external_ref(session, nc_id[:64], value, signed.principal)

    try:
        await _in_db(request, save)
    except PatrolError as exc:
        try:
            return await _in_db(request, _nc_page(request, signed, nc_id[:64],
                                                  status=_status_of(exc), refusal=str(exc)))
        except NotFound:
            return HTMLResponse(str(exc), status_code=404, headers=HEADERS)
    return RedirectResponse(f"/ncs/{nc_id}", status_code=303)


@router.post("/ncs/{nc_id}/{action}")
async def nc_action(request: Request, nc_id: str, action: str) -> Response:
    """A person's action through the API's own service function (api.lifecycle.perform):
    the same checks, the same history entry. A refusal shows the NC again with why."""
    signed, form = await _checked(request)
    pk = parse_nc_id(nc_id[:64])
    if pk is None or action not in ACTIONS:
        return HTMLResponse(texts(signed.user.language)["none"], status_code=404,
                            headers=HEADERS)
    fields = {name: value.strip() for name, value in form.items()
              if name in FORM_FIELDS[action] and value.strip()}

    def act(session: Any) -> None:
        perform(session, pk, action, ActionBody(**fields), signed.principal,
                allow_self_verify=request.app.state.allow_self_verify,
                root_cause_categories=request.app.state.root_cause_categories)

    try:
        await _in_db(request, act)
    except (PatrolError, ValidationError) as exc:
        status = _status_of(exc) if isinstance(exc, PatrolError) else 422
        reason = str(exc) if isinstance(exc, PatrolError) else "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        try:
            return await _in_db(request, _nc_page(request, signed, nc_id[:64],
                                                  status=status, refusal=reason))
        except NotFound:
            return HTMLResponse(reason, status_code=404, headers=HEADERS)
    return RedirectResponse(f"/ncs/{nc_id}", status_code=303)


@dataclass
class Grid:
    """One site's board: its assets and standards in order, a cell per reported pair."""

    assets: list[str]
    standards: list[str]
    cells: dict[tuple[str, str], dict[str, Any]]


BOARD_PAIRS = 20_000
"""Pairs on one board at the most (200 assets x 100 standards)."""


@router.get("/board")
async def board(request: Request) -> Response:
    """Every (asset, standard) the person's sites report, by site: coloured by its
    compliance state (the API's `GET /compliance`), with the open NC, if any, linked and
    dated."""
    signed = await _signed_in(request)
    site_id = request.query_params.get("site_id") or None

    def read(session: Any) -> list[tuple[str, Grid]]:
        rows = session.execute(compliance_query(site_id=site_id, sites=signed.principal.sites)
                               .limit(BOARD_PAIRS)).scalars().all()
        n = Nonconformance
        scope = [] if signed.principal.sites is None else [
            n.site_id.in_(sorted(signed.principal.sites))]
        open_ncs = {(nc.site_id, nc.asset_id, nc.standard_id): nc for nc in session.scalars(
            select(n).where(n.state.in_(OPEN_STATES), *scope))}
        grids: dict[str, Grid] = {}
        for row in rows:
            grid = grids.setdefault(row.site_id, Grid([], [], {}))
            if row.asset_id not in grid.assets:
                grid.assets.append(row.asset_id)
            if row.standard_id not in grid.standards:
                grid.standards.append(row.standard_id)
            nc = open_ncs.get((row.site_id, row.asset_id, row.standard_id))
            grid.cells[row.asset_id, row.standard_id] = {
                "state": row.state, "updated_at": row.updated_at,
                "nc": {"id": format_nc_id(nc.pk), "detected_at": nc.detected_at} if nc else None}
        for grid in grids.values():
            grid.standards.sort()
        return sorted(grids.items())

    return _render("board.html", signed=signed,
                   sites=await _in_db(request, read),
                   local=_clock(request, "%m-%d %H:%M"))


@router.get("/gateways")
async def gateways_page(request: Request) -> Response:
    """The fleet: each gateway's last heartbeat (the API's `GET /gateways`), offline ones
    first, with the offline NC linked."""
    signed = await _signed_in(request)
    after = request.app.state.gateway_offline_after
    items = await _in_db(request, lambda session: list_gateways(
        session, datetime.now(UTC), after, sites=signed.principal.sites))
    return _render("gateways.html", signed=signed, gateways=items,
                   offline_after=round(after.total_seconds()), local=_clock(request))


KPIS = ("compliance_rate", "coverage", "intactness_rate", "raised", "closed", "open_at_end",
        "overdue", "on_time_rate", "first_pass_rate", "reopen_rate", "mttr_s")
"""The report's figures the page shows (every figure is in the CSV and XLSX)."""


def _report(request: Request, signed: users.Signed) -> tuple[dict[str, Any], str]:
    """The compliance report of the page's query, scoped like the API's."""
    query = request.query_params
    group_by = query.get("group_by") or "department"
    state = request.app.state
    window = window_of(moment("from", query.get("from")), moment("to", query.get("to")),
                       timezone=state.timezone)
    with _db(request).session() as session:
        return compliance_report(session, window=window, group_by=group_by,
                                 sites=signed.principal.sites, targets=state.kpi_targets,
                                 asset_types=state.assets), group_by


@router.get("/report")
async def report_page(request: Request) -> Response:
    """The KPI report (the API's `GET /reports/compliance`): each figure beside the
    previous period's, marked by its target's status; CSV and XLSX to download."""
    signed = await _signed_in(request)
    t = texts(signed.user.language)
    try:
        report, group_by = await run_in_threadpool(_report, request, signed)
        refusal = None
    except Invalid as exc:
        report, group_by, refusal = None, request.query_params.get("group_by"), str(exc)
    rows = []
    if report is not None:
        for group in report["groups"]:
            key = group["key"]
            rows.append({"name": "/".join(str(v) for v in key.values()),
                         "label": " / ".join("-" if v is None else str(v)
                                             for v in key.values()),
                         "data": True, **group})
        rows.append({"name": "total", "label": t["total"], "data": False,
                     **report["total"]})

    def shown(name: str, value: float | None) -> str:
        if value is None:
            return "-"
        if name.endswith("_rate") or name == "coverage":
            return f"{value * 100:.1f}%"
        if name.endswith("_s"):
            return t["hours"].format(n=f"{value / 3600:.1f}")
        return str(int(value))

    kept = {k: v for k, v in request.query_params.items() if k in ("from", "to", "group_by")}
    status = 422 if refusal else 200
    pareto = [item for item in report["total"]["figures"]["pareto"]
              if item["by"] == "count"] if report else []
    trend = [(group["key"]["month"], group["figures"]["compliance_rate"])
             for group in report["groups"]] if report and group_by == "month" else []
    return _render("report.html", status=status, signed=signed,
                   report=report, rows=rows, kpis=KPIS, group_by=group_by or "department",
                   pareto=pareto, trend=trend,
                   query=request.query_params, refusal=refusal, shown=shown,
                   download=f"/report/download?{urlencode(kept)}")


@router.get("/report/download")
async def report_download(request: Request) -> Response:
    """The same report as CSV or XLSX, for a signed-in person (the API's needs a token)."""
    signed = await _signed_in(request)
    kind = request.query_params.get("format", "csv")
    try:
        report, _ = await run_in_threadpool(_report, request, signed)
    except Invalid as exc:
        return HTMLResponse(str(exc), status_code=422, headers=HEADERS)
    if kind == "xlsx":
        body, media, name = to_xlsx(report), XLSX_TYPE, "compliance-report.xlsx"
    else:
        body, media, name = to_csv(report), CSV_TYPE, "compliance-report.csv"
    return Response(body, media_type=media, headers={
        **HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})


def _not_admin(signed: users.Signed) -> Response | None:
    """The refusal of a person who is not an administrator, if they are not."""
    if signed.user.role == "admin":
        return None
    return HTMLResponse(texts(signed.user.language)["admin_only"], status_code=403,
                        headers=HEADERS)


def _users_page(signed: users.Signed, *, status: int = 200, message: str | None = None,
                refusal: str | None = None) -> Callable[[Any], Response]:
    def read(session: Any) -> Response:
        return _render("users.html", status=status,
                       signed=signed, users=users.list_users(session), message=message,
                       refusal=refusal)
    return read


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    """An administrator's list of people: reset a password, disable or enable (adding
    people stays with `patrol user add`, where the password never crosses a form)."""
    signed = await _signed_in(request)
    return _not_admin(signed) or await _in_db(request, _users_page(signed))


@router.post("/admin/users/{user_id}/{change}")
async def change_user(request: Request, user_id: int, change: str) -> Response:
    signed, form = await _checked(request)
    if (refusal := _not_admin(signed)) is not None:
        return refusal
    t = texts(signed.user.language)

    def apply(session: Any) -> str:
        user = session.get(User, user_id)
        if user is None or change not in ("password", "disable", "enable"):
            raise NotFound(f"no user {user_id}")
        if change == "password":
            users.set_password(session, user.name, form.get("password", ""))
            return str(t["password_set"].format(name=user.name))
        users.set_disabled(session, user.name, change == "disable")
        return ""

    try:
        message = await _in_db(request, apply)
    except (Invalid, NotFound) as exc:
        status = 404 if isinstance(exc, NotFound) else 422
        return await _in_db(request, _users_page(signed, status=status, refusal=str(exc)))
    return await _in_db(request, _users_page(signed, message=message or None))


@router.get("/inspections")
async def inspections_page(request: Request) -> Response:
    """Past inspections, newest first, and a form to run one (a template of
    `inspections.templates`, or every standard now)."""
    signed = await _signed_in(request)
    return await _in_db(request, _inspections(request, signed))


def _inspections(request: Request, signed: users.Signed, *, status: int = 200,
                 refusal: str | None = None) -> Callable[[Any], Response]:
    def read(session: Any) -> Response:
        rows, _ = inspection_service.list_inspections(
            session, signed.principal, site_id=None, template=None, limit=50, cursor=None)
        setup = request.app.state.inspections
        return _render("inspections.html", status=status,
                       signed=signed, refusal=refusal,
                       inspections=[inspection_service.describe(row) for row in rows],
                       templates=[t.name for t in setup.config.templates],
                       may=signed.principal.may(*inspection_service.WRITERS),
                       local=_clock(request))
    return read


@router.post("/inspections")
async def run_inspection(request: Request) -> Response:
    """Run one through the API's own service (`api.inspections.service.start`)."""
    signed, form = await _checked(request)
    setup = request.app.state.inspections

    def run() -> dict[str, Any]:
        site_id = setup.site_id
        if not site_id:
            raise Invalid("this server runs no site of its own: run inspections through "
                          "the API with a site_id")
        inspection_service.check_writer(signed.principal, site_id)
        template, selection = inspection_service.request_selection(
            setup, template=form.get("template") or None, standards=None, assets=None)
        name = form.get("name", "").strip()[:200] or (template.name if template else "")
        return inspection_service.start(
            _db(request).write, setup, site_id=site_id, name=name, template=template,
            selection=selection, actor=(signed.principal.name, signed.principal.role),
            now=datetime.now(UTC), recurrence=request.app.state.recurrence)

    try:
        report = await run_in_threadpool(run)
    except PatrolError as exc:
        return await _in_db(request, _inspections(request, signed, status=_status_of(exc),
                                                  refusal=str(exc)))
    return RedirectResponse(f"/inspections/{report['id']}", status_code=303)


def _inspection(request: Request, signed: users.Signed, inspection_id: int, *,
                status: int = 200, refusal: str | None = None) -> Callable[[Any], Response]:
    def read(session: Any) -> Response:
        inspection = inspection_service.get(session, inspection_id, signed.principal)
        report = inspection_service.describe(
            inspection, inspection_service.items_of(session, inspection.id))
        return _render("inspection.html", status=status,
                       signed=signed, report=report, refusal=refusal,
                       may=signed.principal.may(*inspection_service.WRITERS),
                       local=_clock(request))
    return read


@router.get("/inspections/{inspection_id}")
async def inspection_page(request: Request, inspection_id: int) -> Response:
    """One inspection's report: every pair judged, the checklist to answer."""
    signed = await _signed_in(request)
    try:
        return await _in_db(request, _inspection(request, signed, inspection_id))
    except NotFound:
        return HTMLResponse(texts(signed.user.language)["no_inspections"], status_code=404,
                            headers=HEADERS)


@router.post("/inspections/{inspection_id}/items/{item_id}")
async def answer_item(request: Request, inspection_id: int, item_id: str) -> Response:
    """A checklist answer through the API's own service: a fail opens an NC."""
    signed, form = await _checked(request)
    result, note = form.get("result", ""), (form.get("note") or "").strip()[:2000] or None

    def answer() -> None:
        if result not in ("pass", "fail", "na"):
            raise Invalid(f"a checklist answer is pass, fail or na, not {result!r}")
        inspection_service.answer_committed(
            _db(request).write, request.app.state.inspections, inspection_id, item_id[:40],
            result, note, signed.principal, datetime.now(UTC),
            recurrence=request.app.state.recurrence)

    try:
        await run_in_threadpool(answer)
    except PatrolError as exc:
        try:
            return await _in_db(request, _inspection(request, signed, inspection_id,
                                                     status=_status_of(exc),
                                                     refusal=str(exc)))
        except NotFound:
            return HTMLResponse(str(exc), status_code=404, headers=HEADERS)
    return RedirectResponse(f"/inspections/{inspection_id}", status_code=303)


def _notifications(request: Request, signed: users.Signed, *, status: int = 200,
                   refusal: str | None = None) -> Callable[[Any], Response]:
    def read(session: Any) -> Response:
        now = datetime.now(UTC)
        sent, _ = notify_history.list_notifications(
            session, nc_id=None, channel=None, status=None, event=None, limit=100,
            cursor=None, sites=signed.principal.sites)
        current, _ = silences.list_silences(session, signed.principal, state="active",
                                            limit=100, cursor=None, now=now)
        coming, _ = silences.list_silences(session, signed.principal, state="pending",
                                           limit=100, cursor=None, now=now)
        return _render("notifications.html", status=status,
                       signed=signed, refusal=refusal, notifications=sent,
                       silences=[silences.describe(s, now) for s in [*current, *coming]],
                       may=signed.principal.may(*silences.WRITERS),
                       local=_clock(request))
    return read


@router.get("/notifications")
async def notifications_page(request: Request) -> Response:
    """What was sent, suppressed or merged, and why (the API's `GET /notifications`), and
    the silences in force, to add or end."""
    signed = await _signed_in(request)
    return await _in_db(request, _notifications(request, signed))


@router.post("/silences")
async def create_silence(request: Request) -> Response:
    """A silence through the API's own service (`api.notify.silences.create`)."""
    signed, form = await _checked(request)
    now = datetime.now(UTC)

    def create(session: Any) -> None:
        matchers = {key: form[key].strip()[:128] for key in
                    ("site_id", "asset_id", "standard_id", "severity")
                    if form.get(key, "").strip()}
        try:
            hours = float(form.get("hours", ""))
        except ValueError:
            raise Invalid("the silence's length is a number of hours") from None
        if not 0 < hours <= 720:
            raise Invalid("a silence lasts more than 0 and at most 720 hours")
        silences.create(session, matchers, None, now + timedelta(hours=hours),
                        form.get("comment", "").strip(), signed.principal, now)

    try:
        await _in_db(request, create)
    except PatrolError as exc:
        return await _in_db(request, _notifications(request, signed,
                                                    status=_status_of(exc), refusal=str(exc)))
    return RedirectResponse("/notifications", status_code=303)


@router.post("/silences/{silence_id}/expire")
async def expire_silence(request: Request, silence_id: int) -> Response:
    signed, _ = await _checked(request)
    try:
        await _in_db(request, lambda session: silences.expire(
            session, silence_id, signed.principal, datetime.now(UTC)))
    except PatrolError as exc:
        return await _in_db(request, _notifications(request, signed,
                                                    status=_status_of(exc), refusal=str(exc)))
    return RedirectResponse("/notifications", status_code=303)
