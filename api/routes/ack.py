# ruff: noqa: RUF001  (Chinese text is written with full-width punctuation)
"""The page an alert link opens (SPEC 7.2): `GET /ack/{token}` shows the NC and asks who
is acknowledging; `POST /ack/{token}` (a form with `name`) acknowledges it.

No bearer token here, on purpose: these are not API routes (not under /api/v1, not in
the OpenAPI document) but a page engineers open from a chat message on a phone, where
they hold no token. The signed, expiring link is the permission (api.notify.links), for
one NC and one action; api/door.py lets `/ack/` through for that reason. GET changes
nothing (chat apps fetch links to preview them); only the form's POST acts, and it must
be a form post. A forged cross-site form would still need the unguessable token, and
acknowledging twice is refused by the state machine, so a link need not be single use.

Answers are small HTML pages, English or Chinese by `Accept-Language` (else the site's
locale), with no external asset: a 4xx page says why (400 malformed or forged, 410
expired, 404 no such NC, 409 no longer open, 415 not a form, 422 no name).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment
from starlette.concurrency import run_in_threadpool

from api.deps import get_db
from api.errors import Invalid, NotFound
from api.lifecycle import CHANNEL
from api.notify import links
from api.store import Database

router = APIRouter(prefix="/ack", include_in_schema=False)
Token = Annotated[str, Path(max_length=links.MAX_TOKEN)]
FORM = "application/x-www-form-urlencoded"

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "acknowledge": "Acknowledge {nc_id}", "who": "Who is acknowledging?",
        "name": "Your name", "button": "Acknowledge",
        "nc": "Nonconformance", "title": "Title", "asset": "Asset", "severity": "Severity",
        "state": "State",
        "done": "{nc_id} is acknowledged by {name}.", "done_heading": "Acknowledged",
        "not_open": "{nc_id} is {state}: there is nothing to acknowledge.",
        "not_open_heading": "Nothing to acknowledge",
        "bad": "This link is not valid: it was changed, or not copied whole. Use the link "
               "in the alert as it is, or the console.",
        "bad_heading": "Link not valid",
        "expired": "This link expired at {at} (links last 24 h). Use the link in the "
                   "latest alert, or the console.",
        "expired_heading": "Link expired",
        "missing": "The nonconformance this link names is not there any more.",
        "missing_heading": "Not found",
        "no_name": "Please enter your name.", "not_form": "Send the page's form.",
    },
    "zh-CN": {
        "acknowledge": "确认 {nc_id}", "who": "请填写确认人", "name": "姓名",
        "button": "确认",
        "nc": "不合格项", "title": "标题", "asset": "设备", "severity": "严重程度",
        "state": "状态",
        "done": "{nc_id} 已由 {name} 确认。", "done_heading": "已确认",
        "not_open": "{nc_id} 当前为“{state}”，无需确认。", "not_open_heading": "无需确认",
        "bad": "此链接无效：可能被修改或未完整复制。请直接使用告警中的链接，或登录控制台处理。",
        "bad_heading": "链接无效",
        "expired": "此链接已于 {at} 过期（有效期 24 小时）。"
                   "请使用最新告警中的链接，或登录控制台处理。",
        "expired_heading": "链接已过期",
        "missing": "此链接对应的不合格项已不存在。", "missing_heading": "未找到",
        "no_name": "请填写姓名。", "not_form": "请通过页面上的表单提交。",
    },
}
WORDS: dict[str, dict[str, str]] = {
    # NC states and severities as the glossary (GLOSSARY.md) writes them
    "zh-CN": {"open": "待处理", "acknowledged": "已确认", "rectifying": "整改中",
              "pending_verification": "待验证", "closed": "已关闭", "cancelled": "已撤销",
              "critical": "严重", "major": "重要", "minor": "一般"},
    "en": {"pending_verification": "pending verification"},
}

PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{{ heading }}</title>
<style>
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;
margin:0;padding:1rem;background:#f4f5f7;color:#1d2330;line-height:1.5}
main{max-width:32rem;margin:0 auto;background:#fff;border-radius:.5rem;padding:1.25rem;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.3rem;margin:0 0 .75rem}p.note{padding:.6rem .8rem;border-radius:.4rem;
background:#eef3fb}p.error{background:#fdecec;color:#8a1c1c}
dl{display:grid;grid-template-columns:auto 1fr;gap:.3rem .9rem;margin:0 0 1rem}
dt{color:#5b6372}dd{margin:0;word-break:break-word}
.critical{color:#b00020;font-weight:600}.major{color:#b35c00;font-weight:600}
label{display:block;font-weight:600;margin:.5rem 0 .3rem}
input{width:100%;box-sizing:border-box;font-size:1.1rem;padding:.6rem;
border:1px solid #b8bfcc;border-radius:.4rem}
button{margin-top:.9rem;width:100%;font-size:1.1rem;padding:.75rem;border:0;
border-radius:.4rem;background:#1f5fd1;color:#fff}
</style></head><body><main>
<h1>{{ heading }}</h1>
{% if message %}<p class="note{% if error %} error{% endif %}">{{ message }}</p>{% endif %}
{% if nc %}<dl>
<dt>{{ t.nc }}</dt><dd>{{ nc.id }}</dd>
<dt>{{ t.title }}</dt><dd>{{ nc.title }}</dd>
<dt>{{ t.asset }}</dt><dd>{{ nc.asset_id }}</dd>
<dt>{{ t.severity }}</dt><dd class="{{ nc.severity }}">{{ word(nc.severity) }}</dd>
<dt>{{ t.state }}</dt><dd>{{ word(nc.state) }}</dd>
</dl>{% endif %}
{% if form %}<form method="post">
<label for="name">{{ t.who }}</label>
<input id="name" name="name" required maxlength="128" autocomplete="name"
placeholder="{{ t.name }}" value="{{ name }}">
<button type="submit">{{ t.button }}</button>
</form>{% endif %}
</main></body></html>
""")


def locale_of(request: Request) -> str:
    """zh-CN or en: the reader's first choice among them (`Accept-Language`), else the
    site's (`site.locale`)."""
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(request.headers.get("accept-language", "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        tag = tag.strip().lower()
        if weight > 0 and (tag.startswith("zh") or tag.startswith("en")):
            choices.append((-weight, index, "zh-CN" if tag.startswith("zh") else "en"))
    if choices:
        return min(choices)[2]
    site = getattr(request.app.state, "locale", "en")
    return site if site in TEXTS else "en"


def _page(request: Request, status: int, heading: str, *, message: str = "",
          error: bool = False, nc: dict[str, Any] | None = None, form: bool = False,
          name: str = "") -> HTMLResponse:
    lang = locale_of(request)
    words = WORDS.get(lang, {})
    body = PAGE.render(lang=lang, heading=heading, message=message, error=error, nc=nc,
                       form=form, name=name, t=TEXTS[lang],
                       word=lambda w: words.get(w, w))
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _text(request: Request, key: str, **values: str) -> str:
    return TEXTS[locale_of(request)][key].format(**values)


def _refusal(request: Request, exc: Exception) -> HTMLResponse:
    """The page for a link that cannot be used, with the status that says why."""
    if isinstance(exc, links.LinkExpired):
        at = exc.expired_at.strftime("%Y-%m-%d %H:%M UTC")
        return _page(request, 410, _text(request, "expired_heading"), error=True,
                     message=_text(request, "expired", at=at))
    if isinstance(exc, NotFound):
        return _page(request, 404, _text(request, "missing_heading"), error=True,
                     message=_text(request, "missing"))
    return _page(request, 400, _text(request, "bad_heading"), error=True,
                 message=_text(request, "bad"))


def _form_page(request: Request, nc: dict[str, Any], *, status: int = 200,
               message: str = "", name: str = "") -> HTMLResponse:
    """The NC and, while it is open, the form; otherwise what state it is in."""
    if nc["state"] != "open":
        state = WORDS.get(locale_of(request), {}).get(nc["state"], nc["state"])
        return _page(request, status, _text(request, "not_open_heading"), nc=nc,
                     message=_text(request, "not_open", nc_id=nc["id"], state=state))
    return _page(request, status, _text(request, "acknowledge", nc_id=nc["id"]), nc=nc,
                 form=True, message=message, error=bool(message), name=name)


@router.get("/{token}", response_class=HTMLResponse)
def show(token: Token, request: Request,
         db: Annotated[Database, Depends(get_db)]) -> HTMLResponse:
    """The NC the link names and the form; changes nothing."""
    with db.session() as session:
        try:
            nc = links.linked_nc(session, token, datetime.now(UTC))
        except (Invalid, NotFound) as exc:
            return _refusal(request, exc)
    return _form_page(request, nc)


@router.post("/{token}", response_class=HTMLResponse)
async def acknowledge(token: Token, request: Request,
                      db: Annotated[Database, Depends(get_db)]) -> HTMLResponse:
    """Acknowledge the NC for the person the form names ("via alert link")."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != FORM:
        return _page(request, 415, _text(request, "bad_heading"), error=True,
                     message=_text(request, "not_form"))
    try:
        fields = parse_qs((await request.body()).decode("utf-8"), max_num_fields=10,
                          strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return _page(request, 400, _text(request, "bad_heading"), error=True,
                     message=_text(request, "not_form"))
    name = (fields.get("name") or [""])[0]
    return await run_in_threadpool(_acknowledge, request, db, token, name)


def _acknowledge(request: Request, db: Database, token: str, name: str) -> HTMLResponse:
    now = datetime.now(UTC)
    try:
        with db.write() as session:
            try:
                who = links.check_name(name)
            except Invalid:
                nc = links.linked_nc(session, token, now)
                return _form_page(request, nc, status=422, name=name[:128],
                                  message=_text(request, "no_name"))
            session.info[CHANNEL] = "link"
            done = links.acknowledge(session, token, who, now)
            session.commit()
    except (Invalid, NotFound) as exc:
        return _refusal(request, exc)
    if not done.done:
        return _form_page(request, done.nc, status=409)
    return _page(request, 200, _text(request, "done_heading"), nc=done.nc,
                 message=_text(request, "done", nc_id=done.nc["id"], name=who))
