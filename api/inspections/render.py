# ruff: noqa: RUF001  (full-width Chinese punctuation is meant)
"""An inspection report or a compliance summary as the text of one channel's tool, in the
site's language and time zone, within the tool's size.

A channel's sender (api.notify.channels) renders what it sends through the function it is
built with; `renderer(document)` is that function for a report, so a report reaches a chat
robot, a mailbox or the site's broker the way an NC notification does, with the tool's own
markup (api.notify.markup: data escaped, never markup). What does not fit is counted:
"… 12 more items not shown".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from api.notify.markup import STYLES, clean
from api.notify.message import Notice, Rendered

WORDS: dict[str, dict[str, Any]] = {
    "en": {
        "title_inspection": "[Patrol] Inspection {name}{at_site}: {fail} failed, "
                            "{no_data} no data",
        "title_summary": "[Patrol] Compliance report {name}{at_site}",
        "at_site": " at {site}",
        "started": "Started", "by": "By", "results": "Results", "period": "Period",
        "raised": "NCs raised", "closed": "NCs closed", "open": "NCs open now",
        "overdue": "of them overdue", "compliance": "Compliance rate",
        "coverage": "Coverage", "violating": "Pairs violating now",
        "top": "Most NCs: {standard} ({n})",
        "kpi": {"on_time_rate": "On-time rectification rate",
                "first_pass_rate": "First-pass rate", "reopen_rate": "Reopen rate",
                "mttr_s": "Mean time to rectify", "intactness_rate": "Intactness rate"},
        "status": {"green": "on target", "amber": "near target", "red": "off target"},
        "hours": "{n} h",
        "result": {"pass": "pass", "fail": "fail", "no_data": "no data", "na": "n.a.",
                   "pending": "pending"},
        "nc": "NC", "more": "… {n} more not shown", "none": "—",
    },
    "zh-CN": {
        "title_inspection": "[Patrol] {site}检查报告 {name}：{fail} 项不通过，"
                            "{no_data} 项无数据",
        "title_summary": "[Patrol] {site}达标率报告 {name}",
        "at_site": "",
        "started": "开始时间", "by": "检查人", "results": "结果", "period": "统计期间",
        "raised": "新增不合格项", "closed": "已关闭不合格项", "open": "未关闭不合格项",
        "overdue": "其中已超期", "compliance": "达标率", "coverage": "数据覆盖率",
        "violating": "当前不达标", "top": "不合格项最多：{standard}（{n}）",
        "kpi": {"on_time_rate": "整改及时率", "first_pass_rate": "一次验证通过率",
                "reopen_rate": "重新打开率", "mttr_s": "平均整改时长",
                "intactness_rate": "设备完好率"},
        "status": {"green": "达标", "amber": "接近目标", "red": "未达标"},
        "hours": "{n} 小时",
        "result": {"pass": "通过", "fail": "不通过", "no_data": "无数据", "na": "不适用",
                   "pending": "待填写"},
        "nc": "不合格项", "more": "… 另有 {n} 项未显示", "none": "—",
    },
}
MARKS = {"fail": "✗", "no_data": "?", "pending": "☐", "na": "–", "pass": "✓"}
ORDER = ("fail", "no_data", "pending", "na", "pass")
"""Items listed most urgent first; passes are counted, and listed only if room is left."""


Text = tuple[str, dict[str, str]]
"""Words with `{names}` and the data that fills them: the words are ours, the data is
escaped for the tool (an asset id or a note cannot make a link or a heading)."""


@dataclass(frozen=True, slots=True)
class Document:
    """What a message says, before any markup: a title, facts always shown (a label and
    a value), and lines shown while they fit."""

    title: Text
    facts: tuple[tuple[str, str], ...]
    lines: tuple[Text, ...] = ()


def _words(locale: str) -> dict[str, Any]:
    return WORDS.get(locale, WORDS["en"])


def _moment(value: datetime | str | None, zone: ZoneInfo, locale: str) -> str:
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = moment.astimezone(zone)
    if locale == "zh-CN":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
    return f"{local:%Y-%m-%d %H:%M %Z}"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def inspection_document(report: dict[str, Any], *, locale: str, timezone: str,
                        site_name: str) -> Document:
    """An inspection report (api.inspections.service.describe with its items)."""
    w, zone = _words(locale), ZoneInfo(timezone)
    counts = report["counts"]
    site = site_name or report["site_id"]
    title = (w["title_inspection"].replace("{at_site}", w["at_site"]),
             {"name": report["name"], "site": site, "fail": str(counts.get("fail", 0)),
              "no_data": str(counts.get("no_data", 0))})
    results = " · ".join(f"{w['result'][r]} {counts.get(r, 0)}" for r in ORDER)
    facts = ((w["started"], _moment(report["started_at"], zone, locale)),
             (w["by"], report["by"]), (w["results"], results))
    lines = [_item_line(item, w, zone, locale) for result in ORDER
             for item in report.get("items", ()) if item["result"] == result]
    return Document(title, facts, tuple(lines))


def _item_line(item: dict[str, Any], w: dict[str, Any], zone: ZoneInfo, locale: str) -> Text:
    mark, result = MARKS[item["result"]], w["result"][item["result"]]
    if item["kind"] == "pair":
        words, data = "{mark} {asset} · {standard}: {result}", {
            "asset": item["asset_id"], "standard": item["standard_id"] or ""}
    else:
        words, data = "{mark} {item}: {text}: {result}", {
            "item": item["item_id"] or "", "text": item["text"] or ""}
    data.update(mark=mark, result=result)
    if item.get("value") is not None:
        words += ", {value} ({at})"
        data.update(value=_number(item["value"]), at=_moment(item.get("at"), zone, locale))
    if item.get("note") and item["kind"] == "manual":
        words += ", {note}"
        data["note"] = item["note"]
    if item.get("nc_id"):
        words += " [{nc}]"
        data["nc"] = item["nc_id"]
    return words, data


def summary_document(summary: dict[str, Any], *, name: str, locale: str, timezone: str,
                     site_name: str) -> Document:
    """A compliance summary (api.inspections.summary.report_summary)."""
    w, zone = _words(locale), ZoneInfo(timezone)
    title = (w["title_summary"].replace("{at_site}", w["at_site"]),
             {"name": name, "site": site_name or summary["site_id"]})
    period = f"{_moment(summary['from'], zone, locale)} – {_moment(summary['to'], zone, locale)}"

    def rate(value: float | None) -> str:
        return w["none"] if value is None else f"{value:.1%}"

    facts = ((w["period"], period), (w["raised"], str(summary["raised"])),
             (w["closed"], str(summary["closed"])),
             (w["open"], f"{summary['open']} ({w['overdue']} {summary['overdue']})"),
             (w["compliance"], rate(summary["compliance_rate"])),
             (w["coverage"], rate(summary["coverage"])),
             (w["violating"], str(summary["violating_now"])),
             *_kpi_facts(summary.get("kpi") or {}, w, rate))
    lines = tuple((w["top"], {"standard": standard, "n": str(n)})
                  for standard, n in summary.get("top_standards", ()))
    return Document(title, facts, lines)


def _kpi_facts(kpi: dict[str, Any], w: dict[str, Any],
               rate: Callable[[float | None], str]) -> tuple[tuple[str, str], ...]:
    """The KPI report's headline figures, each with its target status when one is set."""
    facts = []
    for name, figure in kpi.items():
        value, status = figure.get("value"), figure.get("status")
        if name.endswith("_s"):
            shown = w["none"] if value is None else w["hours"].format(n=f"{value / 3600:.1f}")
        else:
            shown = rate(value)
        if status in w["status"]:
            shown += f" ({w['status'][status]})"
        facts.append((w["kpi"].get(name, name), shown))
    return tuple(facts)


def render_document(document: Document, style_name: str, limit: int,
                    locale: str = "en") -> Rendered:
    """The document in `style_name`'s markup, its body at most `limit` UTF-8 bytes: the
    heading and facts, then lines while they and the count of the rest fit."""
    style = STYLES[style_name]

    def fill(text: Text) -> str:
        words, data = text
        if style.html:  # Markup.format escapes what it fills in
            return Markup(escape(words)).format(**{k: clean(v) for k, v in data.items()})
        return words.format(**{k: style.escape(clean(v)) for k, v in data.items()})

    def label(words: str) -> str:
        return Markup(escape(words)) if style.html else words

    head = [style.heading(fill(document.title)),
            style.newline.join(f"{style.bold(label(name))}: {fill(('{v}', {'v': value}))}"
                               for name, value in document.facts)]
    body = style.gap.join(str(part) for part in head)
    more = _words(locale)["more"]
    shown: list[str] = []
    for number, line in enumerate(document.lines):
        rest = len(document.lines) - number - 1
        text = str(fill(line))
        candidate = style.newline.join([*shown, text])
        trailer = style.newline + more.format(n=rest) if rest else ""
        if _size(body + style.gap + candidate + trailer) > limit:
            break
        shown.append(text)
    if shown:
        body += style.gap + style.newline.join(shown)
    if hidden := len(document.lines) - len(shown):
        body += (style.newline if shown else style.gap) + more.format(n=hidden)
    title = document.title[0].format(**{k: clean(v) for k, v in document.title[1].items()})
    return Rendered(title=clean(title)[:120], body=_cut(body, limit),
                    shown=len(shown))


def renderer(document: Document, locale: str) -> Callable[[Notice, str, int], Rendered]:
    """The render function a channel's sender is built with to send `document`."""
    def render(_notice: Notice, style: str, limit: int) -> Rendered:
        return render_document(document, style, limit, locale)
    return render


def _size(text: str) -> int:
    return len(text.encode())


def _cut(text: str, limit: int) -> str:
    """The last guard: at most `limit` bytes, never inside a character."""
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")
