"""site.yaml `inspections:` (SPEC 7.3) and its cron expressions: every problem one
`FILE:LINE: key: message` line, and fire times in the site's time zone across DST."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.site import load_site
from api.inspections.cron import Cron, CronError
from tests.test_config import problems, write

SITE = """\
site:
  id: tower-a
  timezone: Asia/Shanghai
assets:
  - {id: CH-1, type: chiller}
  - {id: AHU-1, type: ahu}
standards: [standards/*.yaml]
notify:
  channels:
    - {name: quality-mail, kind: email, smtp: "smtp://127.0.0.1:2525", from: p@x.cn, to: [q@x.cn]}
"""
"""Lines 1-10; `inspections:` starts at line 11."""
STANDARDS = """\
standards:
  - {id: HVAC-CHW-SUPPLY, title: t, metric: chw_supply_temp, check: {max: 8}}
  - {id: HVAC-AHU-TEMP, title: t, metric: supply_air_temp, check: {max: 18}}
"""


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "standards" / "hvac.yaml", STANDARDS)
    return tmp_path


def site(site_dir: Path, inspections: str) -> Path:
    return write(site_dir / "site.yaml", SITE + inspections)


def test_a_good_section_loads(site_dir: Path) -> None:
    loaded = load_site(site(site_dir, """\
inspections:
  templates:
    - name: daily-patrol
      standards: [HVAC-*]
      assets: {asset_types: [chiller]}
      items:
        - {id: logbook, text: Log book filled in, asset: CH-1, rectify_within: 1d}
  schedules:
    - {name: morning, cron: "0 8 * * *", template: daily-patrol, channels: [quality-mail]}
    - {name: monthly, cron: "@monthly", report: compliance, channels: [quality-mail]}
    - {name: weekly, cron: "0 9 * * mon", report: compliance, period: 7d,
       channels: [quality-mail]}
"""))
    config = loaded.config.inspections
    assert config is not None and config.stale_after == 900.0
    template = config.template("daily-patrol")
    assert template is not None and template.items[0].rectify_within == 86400.0
    assert [s.name for s in config.schedules] == ["morning", "monthly", "weekly"]
    assert config.schedules[2].period == 7 * 86400.0


def test_cross_references_name_their_lines(site_dir: Path) -> None:
    assert problems(site(site_dir, """\
inspections:
  templates:
    - name: daily-patrol
      standards: [HVAC-*, FIRE-*]
      assets: {assets: [CH-1, CH-7], asset_types: [boiler]}
      items:
        - {id: logbook, text: Log book, asset: PUMP-1}
  schedules:
    - {name: morning, cron: "0 8 * * *", template: nightly, channels: [quality-mail, sms]}
""")) == [
        "site.yaml:19: inspections.schedules[0].template: no template named 'nightly' "
        "(templates: daily-patrol)",
        "site.yaml:19: inspections.schedules[0].channels[1]: no channel named 'sms' in "
        "notify.channels (quality-mail)",
        "site.yaml:14: inspections.templates[0].standards[1]: 'FIRE-*' matches no standard",
        "site.yaml:15: inspections.templates[0].assets.assets[1]: unknown asset 'CH-7'",
        "site.yaml:15: inspections.templates[0].assets.asset_types[0]: no asset has type "
        "'boiler'",
        "site.yaml:17: inspections.templates[0].items[0].asset: unknown asset 'PUMP-1'",
    ]


def test_schema_problems_name_the_key(site_dir: Path) -> None:
    lines = problems(site(site_dir, """\
inspections:
  templates:
    - name: a
      items:
        - {id: x, text: one}
        - {id: x, text: two}
  schedules:
    - name: bad-cron
      cron: "0 25 * * *"
      template: a
      channels: [quality-mail]
    - {name: both, cron: "0 8 * * *", template: a, report: compliance, channels: [quality-mail]}
    - {name: neither, cron: "0 8 * * *", channels: [quality-mail]}
    - {name: period, cron: "0 8 * * *", template: a, period: 1d, channels: [quality-mail]}
    - {name: nowhere, cron: "0 8 * * *", template: a, channels: []}
    - {name: feb30, cron: "0 0 30 2 *", report: compliance, channels: [quality-mail]}
"""))
    assert lines == [
        "site.yaml:14: inspections.templates[0].items: item id 'x' is used twice",
        "site.yaml:19: inspections.schedules[0].cron: hour: 25 is out of range 0-23",
        "site.yaml:22: inspections.schedules[1]: a schedule runs a template or sends a "
        "report: give one of template, report",
        "site.yaml:23: inspections.schedules[2]: a schedule runs a template or sends a "
        "report: give one of template, report",
        "site.yaml:24: inspections.schedules[3]: period belongs to a report schedule (an "
        "inspection judges now)",
        "site.yaml:25: inspections.schedules[4].channels: List should have at least 1 item "
        "after validation, not 0",
        "site.yaml:26: inspections.schedules[5].cron: '0 0 30 2 *' never fires (no such day "
        "in any month)",
    ]


def test_schedules_need_notify_channels(site_dir: Path) -> None:
    text = SITE.split("notify:")[0] + """\
inspections:
  schedules:
    - {name: m, cron: "0 8 * * *", report: compliance, channels: [quality-mail]}
"""
    assert problems(write(site_dir / "site.yaml", text)) == [
        "site.yaml:10: inspections.schedules[0].channels[0]: no channel named 'quality-mail' "
        "in notify.channels (none)"]


def test_names_are_unique(site_dir: Path) -> None:
    assert problems(site(site_dir, """\
inspections:
  templates: [{name: a}, {name: a}]
""")) == ["site.yaml:11: inspections: templates: the name 'a' is used twice"]


# --- cron -------------------------------------------------------------------------------------


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


SHANGHAI, NEW_YORK = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")


@pytest.mark.parametrize(("text", "after", "zone", "expected"), [
    ("0 8 * * *", utc(2026, 12, 4, 0, 0), SHANGHAI, utc(2026, 12, 5, 0, 0)),  # 08:00 CST
    ("0 8 * * *", utc(2026, 12, 3, 23, 59), SHANGHAI, utc(2026, 12, 4, 0, 0)),
    ("*/15 9-17 * * mon-fri", utc(2026, 12, 4, 9, 50), ZoneInfo("UTC"), utc(2026, 12, 4, 10)),
    ("0 9 1 * *", utc(2026, 12, 4), SHANGHAI, utc(2027, 1, 1, 1)),
    ("@monthly", utc(2026, 12, 4), ZoneInfo("UTC"), utc(2027, 1, 1)),
    ("0 0 29 feb *", utc(2026, 3, 1), ZoneInfo("UTC"), utc(2028, 2, 29)),
    # day of month and day of week both given: either fires (Vixie cron)
    ("0 12 13 * fri", utc(2026, 12, 4, 13), ZoneInfo("UTC"), utc(2026, 12, 11, 12)),
    ("0 0 * * 7", utc(2026, 12, 4), ZoneInfo("UTC"), utc(2026, 12, 6)),  # 7: Sunday
    # spring forward: 02:30 does not exist on 8 March, fires at 03:00 EDT
    ("30 2 * * *", utc(2026, 3, 7, 12), NEW_YORK, utc(2026, 3, 8, 7)),
    ("30 2 * * *", utc(2026, 3, 8, 7), NEW_YORK, utc(2026, 3, 9, 6, 30)),
    # fall back: 01:30 happens twice on 1 November, fires once (the first, EDT)
    ("30 1 * * *", utc(2026, 10, 31, 12), NEW_YORK, utc(2026, 11, 1, 5, 30)),
    ("30 1 * * *", utc(2026, 11, 1, 5, 30), NEW_YORK, utc(2026, 11, 2, 6, 30)),
])
def test_next_fire_times(text: str, after: datetime, zone: ZoneInfo,
                         expected: datetime) -> None:
    cron = Cron.parse(text)
    assert cron.next_after(after, zone) == expected
    assert cron.latest(expected, zone) == expected
    assert cron.latest(expected.replace(microsecond=1) if expected.microsecond == 0
                       else expected, zone) == expected


def test_latest_is_the_fire_time_at_or_before() -> None:
    cron = Cron.parse("0 8 * * *")
    assert cron.latest(utc(2026, 12, 4, 0, 0), SHANGHAI) == utc(2026, 12, 4, 0, 0)
    assert cron.latest(utc(2026, 12, 3, 23, 59), SHANGHAI) == utc(2026, 12, 3, 0, 0)


@pytest.mark.parametrize(("text", "message"), [
    ("0 8 * *", "'0 8 * *' has 4 fields; cron has 5"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* * 0 * *", "day of month: 0 is out of range 1-31"),
    ("* * * 13 *", "month: 13 is out of range 1-12"),
    ("* * * * fri-mon", "day of week: range 'fri-mon' ends before it starts"),
    ("*/0 * * * *", "minute: step '0' is not a positive number"),
    ("* * * smarch *", "month: 'smarch' is not a number or a name (jan-dec)"),
])
def test_bad_expressions_say_why(text: str, message: str) -> None:
    with pytest.raises(CronError, match="^" + message.replace("*", r"\*").replace(
            "(", r"\(").replace(")", r"\)")):
        Cron.parse(text)
