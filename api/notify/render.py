"""A notice as the text of one chat tool's message (SPEC 7.2), in the site's language and
time zone, within the tool's size: entries are added, most severe first, while they fit,
and the rest are counted with a link to the console's list ("… 37 more NCs not shown").

Templates are Jinja2 in a sandbox: the built-in ones in `templates/` (shared by every
tool: the markup comes from `api.notify.markup`), or a site's own from site.yaml
(`notify.templates.<format>.{title,entry,digest}`). A site's template that fails (syntax,
sandbox, an undefined name) must not cost the message: the built-in one is used and the
failure logged once. What a template sees (data already escaped for the tool):

    title   subject (the built-in title), count, event, event_key, site, kind, severity, t
    entry   nc (the NC's JSON), event, event_key, severity, sev, standard, evidence,
            detected, due, overdue, assignee, nc_url, ack_url, links, t, b(), link(),
            colour(), locale
    digest  summary, counts, total, minutes, t, b(), link(), colour(), locale

Sizes are UTF-8 bytes; a cut never splits a character, and an entry too large on its own
is shortened by clipping its data and then dropping whole lines, so no link is cut open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from api.notify.catalog import catalog
from api.notify.markup import STYLES, Style, clean, html_escape, safe_url
from api.notify.message import Entry, Notice, Rendered

log = logging.getLogger(__name__)

TEMPLATE_NAMES = ("title", "entry", "digest")
TEMPLATE_FORMATS = ("generic", "dingtalk", "wecom", "feishu", "slack", "email", "mqtt")
"""The keys of site.yaml's `notify.templates` (NotifyConfig.templates)."""
TITLE_CHARS = 120
_HELPERS = {"t", "b", "link", "colour", "locale"}
VARIABLES: dict[str, frozenset[str]] = {
    "title": frozenset({"subject", "count", "event", "event_key", "site", "kind",
                        "severity", "t"}),
    "entry": frozenset({"nc", "event", "event_key", "severity", "sev", "standard",
                        "evidence", "detected", "due", "overdue", "assignee", "nc_url",
                        "ack_url", "links", *_HELPERS}),
    "digest": frozenset({"summary", "counts", "total", "minutes", *_HELPERS}),
}
"""What each template may use (`patrol check` names anything else)."""
_CLIPS = (60, 24, 12)
"""Characters each data value is clipped to, in turn, when one entry alone is too large."""


def _environment(html: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                                autoescape=html, undefined=StrictUndefined,
                                trim_blocks=True, lstrip_blocks=True)


_ENVIRONMENTS = {False: _environment(False), True: _environment(True)}
_warned: set[tuple[str, int]] = set()


@lru_cache(maxsize=128)
def _compiled(html: bool, source: str) -> Template:
    return _ENVIRONMENTS[html].from_string(source)


def render(notice: Notice, style: str, limit: int,
           templates: dict[str, str] | None = None) -> Rendered:
    """The notice as `style`'s markup ("dingtalk", "wecom_markdown", "wecom_text",
    "feishu", "slack", "text", "html", "generic"), its body at most `limit` UTF-8 bytes;
    `templates` are a site's overrides (keys title, entry, digest)."""
    if style not in STYLES:
        raise ValueError(f"no message style {style!r} ({', '.join(STYLES)})")
    message = _Message(notice, STYLES[style], templates or {})
    body, shown = message.fit(limit)
    return Rendered(title=message.title, body=body, shown=shown)


def check_templates(templates: dict[str, dict[str, str]]) -> list[str]:
    """What is wrong in site.yaml's `notify.templates`: unknown formats or names, syntax
    errors, names a template uses but is never given (each would fall back at runtime)."""
    problems: list[str] = []
    for fmt, named in templates.items():
        if fmt not in TEMPLATE_FORMATS:
            problems.append(f"notify.templates.{fmt}: not a format "
                            f"({', '.join(TEMPLATE_FORMATS)})")
        for name, source in named.items():
            where = f"notify.templates.{fmt}.{name}"
            if name not in VARIABLES:
                problems.append(f"{where}: not a template ({', '.join(TEMPLATE_NAMES)})")
                continue
            try:
                tree = _ENVIRONMENTS[False].parse(source)
            except TemplateSyntaxError as exc:
                problems.append(f"{where}: line {exc.lineno}: {exc.message}")
                continue
            unknown = sorted(meta.find_undeclared_variables(tree) - VARIABLES[name])
            if unknown:
                problems.append(f"{where}: unknown name {', '.join(unknown)} (known: "
                                f"{', '.join(sorted(VARIABLES[name]))})")
    return problems


def _size(text: str) -> int:
    return len(text.encode())


def _clip(text: str, chars: int | None) -> str:
    return text if chars is None or len(text) <= chars else text[:chars - 1] + "…"


def _cut(text: str, limit: int) -> str:
    """At most `limit` bytes, at a line's end when one is there, never inside a character:
    the last guard, for a site's header or trailer too large for the tool."""
    data = text.encode()
    if len(data) <= limit:
        return text
    data = data[:limit]
    if (end := data.rfind(b"\n")) > 0:
        data = data[:end]
    return data.decode("utf-8", "ignore")


def _number(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    return str(value)


def _warn_once(what: str, source: str, exc: Exception) -> None:
    """One warning per broken template (or zone), not one per message."""
    key = (what, hash(source))
    if key not in _warned:
        _warned.add(key)
        log.warning("notify %s: %s: %s; using the built-in default", what,
                    type(exc).__name__, exc)


class _Message:
    """One notice being rendered for one tool."""

    def __init__(self, notice: Notice, style: Style, overrides: dict[str, str]) -> None:
        self.notice = notice
        self.style = style
        self.overrides = overrides
        self.t = catalog(notice.locale)
        self.zh = notice.locale == "zh-CN"
        try:
            self.zone: ZoneInfo = ZoneInfo(notice.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            _warn_once(f"time zone {notice.timezone!r}", notice.timezone, exc)
            self.zone = ZoneInfo("UTC")
        self.total = max(notice.total, len(notice.entries))
        self.title = self._title()

    # templates

    def _render(self, name: str, context: dict[str, Any], html: bool) -> str:
        """The site's template when it works, else the built-in one; as lines of markup."""
        context = {"t": self.t, "b": self.style.bold, "link": self._link,
                   "colour": self.style.colour, "locale": self.notice.locale, **context}
        text = None
        if (source := self.overrides.get(name)) is not None:
            try:
                text = _compiled(html, source).render(context)
            except Exception as exc:  # any failure of a site's template: keep the message
                _warn_once(f"template {self.style.name}.{name}", source, exc)
        if text is None:
            text = _ENVIRONMENTS[html].get_template(f"{name}.j2").render(context)
        lines = (line.strip() for line in text.split("\n"))
        return self.style.newline.join(line for line in lines if line)

    def _link(self, url: str | None, text: str) -> str:
        return self.style.link(safe, text) if (safe := safe_url(url)) else text

    # the parts

    def _ncs(self, n: int) -> str:
        return self.t["ncs_one" if n == 1 else "ncs_many"].format(n=n)

    def _minutes(self) -> int:
        return max(1, round(self.notice.window / 60))

    def _event_short(self, event: str, esc: Callable[[str], str]) -> str:
        return self.t["event_short"].get(event) or esc(clean(event))

    def _subject(self, esc: Callable[[str], str]) -> str:
        """The built-in title, its data escaped with `esc`."""
        notice, t = self.notice, self.t
        site = notice.site_name or next((str(e.nc.get("site_id") or "")
                                         for e in notice.entries), "")
        site = esc(_clip(clean(site), 40))
        common = {"prefix": t["prefix"], "at_site": t["at_site"].format(site=site) if site
                  else ""}
        if notice.kind == "test":
            return t["title_test"].format(**common)
        if notice.kind == "digest":
            return t["title_digest"].format(ncs=self._ncs(self.total),
                                            minutes=self._minutes(), **common)
        events = {entry.event for entry in notice.entries}
        if len(events) != 1:
            return t["title_mixed"].format(ncs=self._ncs(self.total), **common)
        event = self._event_short(events.pop(), esc)
        if self.total == 1:
            nc = notice.entries[0].nc
            return t["title_one"].format(
                id=esc(_clip(clean(str(nc.get("id") or "")), 24)), event=event,
                title=esc(_clip(clean(str(nc.get("title") or "")), 60)), **common)
        return t["title_group"].format(ncs=self._ncs(self.total), event=event, **common)

    def _title(self) -> str:
        subject = self._subject(lambda s: s)
        events = {entry.event for entry in self.notice.entries}
        event_key = events.pop() if len(events) == 1 else None
        text = self._render("title", {
            "subject": subject, "count": self.total, "kind": self.notice.kind,
            "event_key": event_key, "severity": self.notice.severity,
            "event": self._event_short(event_key, str) if event_key else None,
            "site": clean(self.notice.site_name)}, html=False)
        return _clip(clean(text), TITLE_CHARS)

    def header(self) -> str:
        """The heading (the title), and what a digest or a test says under it."""
        t, esc, notice = self.t, self.style.escape, self.notice
        subject = _clip(self._subject(lambda s: s), TITLE_CHARS)
        shown_title = self._subject(esc) if self.title == subject else esc(self.title)
        lines = [self.style.heading(shown_title)]
        if notice.kind == "test":
            line = t["test_body"].format(channel=esc(clean(notice.channel)))
            lines.append(html_escape(line) if self.style.html else line)
        elif notice.kind == "digest":
            lines.append(self._render("digest", {
                "summary": t["digest"].format(ncs=self._ncs(self.total),
                                              minutes=self._minutes()),
                "counts": [f"{self._event_short(event, esc)} {n}"
                           for event, n in notice.counts],
                "total": self.total, "minutes": self._minutes()}, self.style.html))
        return self.style.newline.join(lines)

    def entry(self, entry: Entry, clip: int | None = None) -> str:
        """One NC as lines of markup; its data clipped to `clip` characters if given."""
        t, nc, esc = self.t, entry.nc, self.style.escape

        def data(value: object) -> str:
            return esc(_clip(clean(_number(value)), clip))

        severity = str(nc.get("severity") or "")
        label = t["severity"].get(severity) or data(severity)
        assignee = self._assignee(nc, data)
        phrase = t["event"].get(entry.event)
        event = (phrase.format(occurrences=data(nc.get("occurrences") or 1),
                               assignee=assignee or "—") if phrase else data(entry.event))
        standard = t["manual"]
        if nc.get("standard_id"):
            standard = data(nc["standard_id"])
            if nc.get("clause"):
                standard = t["clause"].format(standard=standard, clause=data(nc["clause"]))
        due = self._moment(nc.get("due_at"))
        links = [self._link(url, text) for url, text in
                 ((entry.nc_url, t["open"]), (entry.ack_url, t["acknowledge"]))
                 if safe_url(url)]
        return self._render("entry", {
            "nc": {"id": "", "title": "", "asset_id": "", **_prepared(nc, data)},
            "event": event, "event_key": entry.event, "severity": label,
            "sev": self.style.colour(severity, t["severity_tag"].format(label=label)),
            "standard": standard, "evidence": self._evidence(nc.get("evidence"), data),
            "detected": esc(self._moment(nc.get("detected_at")) or "—"),
            "due": esc(due) if due else None, "overdue": bool(nc.get("overdue")),
            "assignee": assignee, "nc_url": safe_url(entry.nc_url),
            "ack_url": safe_url(entry.ack_url), "links": links}, self.style.html)

    def _assignee(self, nc: dict[str, Any], data: Callable[[object], str]) -> str | None:
        department = nc.get("department")
        department = (self.t["department"].get(department) or data(department)
                      if department else None)
        if not nc.get("assignee"):
            return department
        who = data(nc["assignee"])
        return (self.t["assignee_department"].format(assignee=who, department=department)
                if department else who)

    def _evidence(self, evidence: object, data: Callable[[object], str]) -> str | None:
        """The last value against the standard's limits."""
        if not isinstance(evidence, dict):
            return None
        value = evidence.get("value")
        readings = evidence.get("readings")
        if value is None and readings and isinstance(readings[-1], list | tuple) \
                and len(readings[-1]) >= 2:
            value = readings[-1][1]
        if value is None:
            return None
        limit = evidence.get("limit") if isinstance(evidence.get("limit"), dict) else {}
        low, high = limit.get("min"), limit.get("max")
        words = {"value": data(value), "min": data(low), "max": data(high)}
        if low is not None and high is not None:
            return self.t["limit_range"].format(**words)
        if high is not None:
            return self.t["limit_max"].format(**words)
        if low is not None:
            return self.t["limit_min"].format(**words)
        return words["value"]

    def _moment(self, value: object) -> str | None:
        """A time in the site's zone: `2026-11-25 16:00 CST`, `2026年11月25日 16:00`."""
        if value is None or value == "":
            return None
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                return clean(str(value))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(self.zone)
        if self.zh:
            return f"{moment.year}年{moment.month}月{moment.day}日 {moment:%H:%M}"
        return f"{moment:%Y-%m-%d %H:%M %Z}"

    def trailer(self, hidden: int, with_link: bool = True) -> str:
        words = self.t["more_one" if hidden == 1 else "more_many"].format(n=hidden)
        url = safe_url(self.notice.list_url)
        return words + " · " + self.style.link(url, self.t["view_all"]) \
            if with_link and url else words

    # fitting

    def fit(self, limit: int) -> tuple[str, int]:
        """The body within `limit` bytes and the entries it shows: each entry while it and
        the trailer counting the rest fit; the first one shortened if it alone does not."""
        blocks = [self.header()]
        gap = _size(self.style.gap)
        used = _size(blocks[0])
        shown = 0
        for entry in self.notice.entries:
            rest = self.total - shown - 1
            room = limit - used - gap - (gap + _size(self.trailer(rest)) if rest else 0)
            text: str | None = self.entry(entry)
            if _size(text) > room:
                text = self._shortened(entry, room) if shown == 0 else None
            if text is None:
                break
            blocks.append(text)
            used += gap + _size(text)
            shown += 1
        if hidden := self.total - shown:
            trailer = self.trailer(hidden)
            if used + gap + _size(trailer) > limit:
                trailer = self.trailer(hidden, with_link=False)
            blocks.append(trailer)
        return _cut(self.style.gap.join(blocks), limit), shown

    def _shortened(self, entry: Entry, room: int) -> str | None:
        """The entry with its data clipped, then its first lines only; None when not even
        its first line fits."""
        for clip in _CLIPS:
            text = self.entry(entry, clip)
            if _size(text) <= room:
                return text
        kept: list[str] = []
        for line in text.split(self.style.newline):
            if _size(self.style.newline.join([*kept, line])) > room:
                break
            kept.append(line)
        return self.style.newline.join(kept) if kept else None


def _prepared(value: Any, data: Callable[[object], str]) -> Any:
    """The NC's JSON with every string cleaned and escaped for the tool (a root cause or a
    note is people's text, as able to forge a link as a title)."""
    if isinstance(value, dict):
        return {key: _prepared(item, data) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_prepared(item, data) for item in value]
    return data(value) if isinstance(value, str) else value
