# ruff: noqa: RUF001  (full-width Chinese punctuation is meant)
"""Notification messages (api.notify.render): every tool's markup within its size, en and
zh-CN, times in the site's zone, data that cannot forge markup, and site templates that
cannot lose a message."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.notify.catalog import EN, ZH
from api.notify.config import NOTIFY_EVENTS, TimerKind
from api.notify.message import Entry, Notice
from api.notify.render import TITLE_CHARS, check_templates, render
from common.vocabulary import SEVERITIES

STYLES = ("dingtalk", "wecom_markdown", "wecom_text", "feishu", "slack", "text", "html",
          "generic")
MARKDOWN = ("dingtalk", "wecom_markdown", "feishu")
LIST_URL = "https://patrol.example/ncs?state=open"
MD_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]*)\)")


def nc(i: int = 1, **fields: Any) -> dict[str, Any]:
    return {"id": f"NC-{i:06d}", "site_id": "tower-a", "asset_id": f"CH-{i}",
            "standard_id": "HVAC-CHW-SUPPLY", "standard_version": 3, "clause": "4.2",
            "title": "Chilled water supply too warm" if i % 2 else "冷冻水供水温度过高",
            "severity": ("critical", "major", "minor")[min(i * 3 // 1000, 2)],
            "department": "engineering", "assignee": "Li Wei", "state": "open",
            "detected_at": "2026-11-25T08:00:00Z", "due_at": "2026-11-26T08:00:00Z",
            "overdue": False, "occurrences": 1,
            "evidence": {"value": 9.4, "limit": {"min": 6, "max": 8},
                         "readings": [["2026-11-25T08:00:00Z", 9.4]]}, **fields}


def entry(i: int = 1, event: str = "raised", **fields: Any) -> Entry:
    return Entry(event, nc(i, **fields), nc_url=f"https://patrol.example/nc/NC-{i:06d}",
                 ack_url=f"https://patrol.example/ack/NC-{i:06d}?token=abc&exp=1")


def notice(*entries: Entry, kind: str = "group", locale: str = "en", total: int | None = None,
           **fields: Any) -> Notice:
    fields = {"timezone": "Asia/Shanghai", "site_name": "Tower A", "list_url": LIST_URL,
              **fields}
    return Notice(channel="eng-chat", kind=kind, entries=entries,  # type: ignore[arg-type]
                  total=len(entries) if total is None else total,
                  locale=locale, **fields)  # type: ignore[arg-type]


def size(text: str) -> int:
    return len(text.encode())


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("count", [1, 50, 1000])
@pytest.mark.parametrize("limit", [2048, 4096, 20000])
def test_each_style_fits_its_limit_and_counts_what_it_left_out(style: str, count: int,
                                                                limit: int) -> None:
    out = render(notice(*(entry(i) for i in range(1, count + 1))), style, limit)
    assert size(out.body) <= limit
    assert out.shown >= 1
    shown_ids = [i for i in range(1, count + 1) if f"NC-{i:06d}" in out.body]
    assert shown_ids == list(range(1, out.shown + 1))  # in order, none skipped
    hidden = count - out.shown
    if hidden:
        assert f"{hidden} more NC{'s' if hidden > 1 else ''} not shown" in out.body
        assert "patrol.example/ncs" in out.body
        assert size(out.body) > limit // 2  # the room was used, not given away
    else:
        assert "not shown" not in out.body
    assert count != 1000 or hidden > 0


def test_one_entry_larger_than_the_limit_is_shortened_not_dropped() -> None:
    huge = entry(1, title="温度过高" * 800, assignee="王" * 300)
    for style in STYLES:
        out = render(notice(huge), style, 1024)
        assert out.shown == 1 and size(out.body) <= 1024
        assert "NC-000001" in out.body and "…" in out.body
        if style in MARKDOWN:
            assert out.body.count("](") == len(MD_LINK.findall(out.body))


def test_en_and_zh_cn_say_the_same_in_their_own_words() -> None:
    group = (entry(1), entry(3, event="overdue", overdue=True))
    en = render(notice(*group), "text", 4096)
    zh = render(notice(*group, locale="zh-CN"), "text", 4096)
    assert en.title == "[Patrol] 2 NCs changed at Tower A"
    assert zh.title == "【巡查】Tower A：2 项不合格项有变化"
    for words in ("Raised", "Overdue", "Asset: CH-1", "Standard: HVAC-CHW-SUPPLY, clause 4.2",
                  "Value: 9.4 (limit 6 to 8)", "Assignee: Li Wei (engineering)", "(overdue)",
                  "Acknowledge: https://patrol.example/ack/NC-000001"):
        assert words in en.body
    for words in ("新发现", "已超期", "设备：CH-1", "检查标准：HVAC-CHW-SUPPLY 条款 4.2",
                  "实测值：9.4（限值 6 至 8）", "责任人：Li Wei（工程部）", "（已超期）",
                  "【紧急】"):
        assert words in zh.body
    # Outside the data (ids, titles, assets, standards, names, links), no English at all.
    rest = zh.body + "\n" + zh.title
    for data in sorted({*re.findall(r"https?://\S+", rest), "Chilled water supply too warm",
                        "HVAC-CHW-SUPPLY", "Tower A", "Li Wei", "NC-000001", "NC-000003",
                        "CH-1", "CH-3"}, key=len, reverse=True):
        rest = rest.replace(data, "")
    assert not re.search(r"[A-Za-z]", rest), rest


@pytest.mark.parametrize("event", [*NOTIFY_EVENTS, *get_args(TimerKind)])
def test_every_event_has_words_in_both_locales(event: str) -> None:
    for locale, english in (("en", True), ("zh-CN", False)):
        out = render(notice(entry(1, event=event, occurrences=3), locale=locale), "text", 4096)
        line = out.body.split("\n")[3]  # heading, gap, the NC's first line, then the event
        assert line == (EN if english else ZH)["event"][event].format(
            occurrences=3, assignee="Li Wei (engineering)" if english else "Li Wei（工程部）")


def test_times_are_shown_in_the_site_zone_per_locale() -> None:
    at = {"detected_at": "2026-11-25T08:00:00Z", "due_at": datetime(2026, 11, 26, 8, 0)}
    en = render(notice(entry(1, **at)), "text", 4096).body
    zh = render(notice(entry(1, **at), locale="zh-CN"), "text", 4096).body
    assert "Detected: 2026-11-25 16:00 CST · Due: 2026-11-26 16:00 CST" in en
    assert "发现时间：2026年11月25日 16:00 · 整改时限：2026年11月26日 16:00" in zh


def test_a_single_nc_is_named_in_the_title_which_stays_short() -> None:
    assert render(notice(entry(1)), "dingtalk", 4096).title == \
        "[Patrol] NC-000001 raised: Chilled water supply too warm"
    for long in (notice(entry(1, title="x" * 500)),
                 notice(entry(1), entry(2), site_name="S" * 500, locale="zh-CN")):
        title = render(long, "text", 4096).title
        assert len(title) <= 100 and "…" in title
    own = render(notice(entry(1)), "text", 4096, {"title": "{{ subject * 20 }}"}).title
    assert len(own) == TITLE_CHARS and own.endswith("…")


def test_a_digest_counts_its_events_and_links_to_the_rest() -> None:
    top = tuple(entry(i) for i in range(1, 6))
    en = render(notice(*top, kind="digest", total=37, counts=(("raised", 20), ("overdue", 17))),
                "slack", 20000)
    assert en.title == "[Patrol] 37 NCs in the last 10 min at Tower A"
    assert "37 NCs in the last 10 minutes, the most severe first:" in en.body
    assert "raised 20 · overdue 17" in en.body
    assert en.shown == 5
    assert f"… 32 more NCs not shown · <{LIST_URL}|View all>" in en.body
    zh = render(notice(*top, kind="digest", total=37, locale="zh-CN",
                       counts=(("raised", 20), ("overdue", 17))), "dingtalk", 20000)
    assert "近 10 分钟共 37 项不合格项" in zh.body and "新发现 20 · 已超期 17" in zh.body
    assert f"… 另有 32 项不合格项未显示 · [查看全部]({LIST_URL})" in zh.body


def test_a_test_notice_says_which_channel() -> None:
    out = render(notice(kind="test"), "wecom_markdown", 4096)
    assert out.title == "[Patrol] Test message at Tower A" and out.shown == 0
    assert "channel eng-chat" in out.body
    assert "测试消息" in render(notice(kind="test", locale="zh-CN"), "text", 4096).body


def test_html_escapes_data() -> None:
    evil = entry(1, title="<script>alert(1)</script>", assignee="<b>x</b> & co")
    body = render(notice(evil), "html", 4096).body
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;b&gt;x&lt;/b&gt; &amp; co" in body
    assert '<a href="https://patrol.example/ack/NC-000001?token=abc&amp;exp=1">' in body


INJECTIONS = ["see](http://evil.example) [click", "[click](http://evil.example)",
              "*bold* _it_ ~del~ `code`", "<http://evil.example|click>",
              '<font color="warning">x</font>', "line\n# heading\n[a](http://evil.example)",
              "back\\", "<!channel> <@U123>"]


@pytest.mark.parametrize("style", ["dingtalk", "wecom_markdown", "feishu", "slack"])
def test_data_cannot_forge_links_or_markup(style: str) -> None:
    entries = [entry(i, title=text, assignee=text, asset_id=text)
               for i, text in enumerate(INJECTIONS, 1)]
    body = render(notice(*entries), style, 20000).body
    ours = {f"https://patrol.example/nc/NC-{i:06d}" for i in range(1, 9)} | \
        {f"https://patrol.example/ack/NC-{i:06d}?token=abc&exp=1" for i in range(1, 9)}
    if style == "slack":
        targets = re.findall(r"<([^|>]*)\|", body)
        assert {t.replace("&amp;", "&") for t in targets} <= ours | {LIST_URL}
        assert "<!channel>" not in body and "<@U123>" not in body
        assert "&lt;http://evil.example|click&gt;" in body
    else:
        assert {url for _text, url in MD_LINK.findall(body)} <= ours | {LIST_URL}
        assert body.count("](") == len(MD_LINK.findall(body))
        assert "<font color=\"warning\">x" not in body
    assert "http://evil.example" in body  # shown as text, never as a link target
    assert not re.search(r"(?<![*\w])\*bold\*", body) and "`code`" not in body
    assert not any(line.startswith("# ") for line in body.split("\n"))
    assert "**NC-000001**" in body or "*NC-000001*" in body  # our own markup intact


def test_people_text_in_the_nc_is_escaped_for_a_site_template_too() -> None:
    note = entry(1, rectification={"action": "[fixed](http://evil.example)"})
    body = render(notice(note), "dingtalk", 4096,
                  {"entry": "{{ nc.id }} {{ nc.rectification.action }} {{ link(nc_url, 'go') }}"})
    assert MD_LINK.findall(body.body) == [("go", "https://patrol.example/nc/NC-000001")]


def test_site_templates_replace_the_built_in_ones() -> None:
    templates = {"title": "ALERT {{ count }} {{ event or 'mixed' }} {{ site }}",
                 "entry": "{{ b(nc.id) }} / {{ event }} / {{ severity }}\n{{ links|join(' ') }}",
                 "digest": "{{ total }} in {{ minutes }}m"}
    out = render(notice(entry(1), entry(2, event="closed")), "dingtalk", 4096, templates)
    assert out.title == "ALERT 2 mixed Tower A"
    assert "**NC-000001** / Raised / critical  \n[Open NC](" in out.body
    assert "Asset" not in out.body
    digest = render(notice(entry(1), kind="digest", total=9), "text", 4096, templates)
    assert "9 in 10m" in digest.body


@pytest.mark.parametrize("broken", ["{{ nc.id ", "{{ nope }}", "{{ nc.__class__.__mro__ }}",
                                    "{{ 1 / 0 }}", "{% for x in nc.id %}{{ x.y.z }}{% endfor %}"])
def test_a_broken_site_template_falls_back_and_warns_once(
        broken: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="api.notify.render")
    for _ in range(3):
        out = render(notice(entry(1), entry(2)), "feishu", 4096,
                     {"entry": broken, "title": broken})
        assert "Asset: CH-1" in out.body and "Asset: CH-2" in out.body and out.shown == 2
        assert out.title == "[Patrol] 2 NCs raised at Tower A"
    warnings = [r for r in caplog.records if "template" in r.getMessage()]
    assert len(warnings) == 2  # one for the entry, one for the title


def test_check_templates_names_each_problem() -> None:
    problems = check_templates({
        "dingtalk": {"title": "{{ subject }}", "entry": "{{ nc.id ", "footer": "x"},
        "teams": {"title": "x"},
        "slack": {"entry": "{{ ncc.id }} {{ b(nc.id) }}"}})
    assert problems[0].startswith("notify.templates.dingtalk.entry: line 1: ")
    assert problems[1].startswith("notify.templates.dingtalk.footer: not a template")
    assert problems[2].startswith("notify.templates.teams: not a format")
    assert problems[3].startswith("notify.templates.slack.entry: unknown name ncc ")
    assert len(problems) == 4
    assert check_templates({"email": {"entry": "{{ nc.title }} {{ link(nc_url, t.open) }}",
                                      "digest": "{{ summary }}"}}) == []


def test_the_catalogs_are_complete_and_zh_cn_speaks_no_english() -> None:
    def flat(words: dict[str, Any], prefix: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in words.items():
            out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) \
                else {f"{prefix}{key}": value}
        return out

    en, zh = flat(EN), flat(ZH)
    assert en.keys() == zh.keys()
    for key in en:
        assert set(re.findall(r"{\w+}", en[key])) == set(re.findall(r"{\w+}", zh[key])), key
        assert not re.search(r"[A-Za-z]", re.sub(r"{\w+}", "", zh[key])), key
    for event in (*NOTIFY_EVENTS, *get_args(TimerKind)):
        assert f"event.{event}" in en and f"event_short.{event}" in en
    assert {f"severity.{s}" for s in SEVERITIES} <= en.keys()


_TEXT = st.text(st.characters(exclude_categories=()), max_size=600)  # surrogates too


@settings(max_examples=150, deadline=None)
@given(titles=st.lists(_TEXT, min_size=1, max_size=25), limit=st.integers(300, 6000),
       style=st.sampled_from(STYLES), locale=st.sampled_from(["en", "zh-CN"]),
       site=_TEXT)
def test_any_data_fits_any_limit_in_whole_characters(titles: list[str], limit: int,
                                                     style: str, locale: str,
                                                     site: str) -> None:
    entries = [entry(i, title=title, asset_id=title[:40], assignee=title[:20])
               for i, title in enumerate(titles, 1)]
    out = render(notice(*entries, locale=locale, site_name=site), style, limit)
    encoded = out.body.encode()  # raises on anything UTF-8 cannot carry
    assert len(encoded) <= limit and encoded.decode() == out.body
    assert 0 <= out.shown <= len(titles)
    assert len(out.title) <= TITLE_CHARS
    if style in MARKDOWN:
        assert out.body.count("](") == len(MD_LINK.findall(out.body))
    if out.shown < len(titles):
        assert f"{len(titles) - out.shown} " in out.body


def test_an_unknown_time_zone_shows_utc_and_an_unknown_style_is_refused() -> None:
    out = render(notice(entry(1), timezone="Mars/Olympus"), "text", 4096)
    assert "Detected: 2026-11-25 08:00 UTC" in out.body
    with pytest.raises(ValueError, match="teams"):
        render(notice(entry(1)), "teams", 4096)
