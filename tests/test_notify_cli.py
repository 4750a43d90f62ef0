"""`patrol notify routes` and the notify warnings of `patrol check`, through the CLI's main()
on a small site.yaml (and once as a process, as people run it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main

SITE = """\
site:
  id: tower-a
  timezone: Asia/Shanghai
notify:
  channels:
    - {name: a, kind: mqtt, topic: t/a}
    - {name: b, kind: mqtt, topic: t/b}
  time_intervals:
    - {name: night, times: ["22:00-07:00"]}
  routes:
    - match: {severity: critical}
      channels: [a]
      remind_every: 30m
      escalate_after: 15m
      escalate_to: [b]
      continue: true
    - match: {department: engineering}
      channels: [a]
      group_by: [site_id, standard_id]
      mute_time_intervals: [night]
    - match: {department: engineering, severity: major}
      channels: [b]
mqtt: {url: "mqtt://127.0.0.1:1883"}  # mqtt channels publish through the site's broker
"""
"""Route 2 is shadowed by route 1 (line 21); nothing catches what is not engineering's."""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "site.yaml"
    path.write_text(SITE, encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_routes_shows_each_route_reached_with_its_timing(
        site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "notify", "routes", "-c", "site.yaml", "--severity",
                         "critical", "--department", "engineering", "--standard-id", "S-1",
                         "--at", "2026-12-04T23:30")
    assert (code, err) == (0, [])
    assert out == [
        "NC: site_id=tower-a standard_id=S-1 severity=critical department=engineering "
        "(unset: asset_id, asset_type, standard_kind, category)",
        "event: raised; at 2026-12-04 23:30 Asia/Shanghai",
        "notify.routes[0]: match {severity: [critical]}, events all -> raised",
        "  channels: a",
        "  group: department=engineering|site_id=tower-a (group_by site_id, department); "
        "first message after 30s, later ones after 5m",
        "  remind every 30m while not acknowledged; escalate after 15m to b",
        "  mutes: none",
        "  continue: later routes are tried too",
        "notify.routes[1]: match {department: [engineering]}, events all -> raised",
        "  channels: a",
        "  group: site_id=tower-a|standard_id=S-1 (group_by site_id, standard_id); "
        "first message after 30s, later ones after 5m",
        "  no reminders",
        "  not muted: critical bypasses mutes",
    ]


@pytest.mark.parametrize(("at", "said"), [
    ("2026-12-04T23:30", "  muted now: mute night"),
    ("2026-12-04T12:00", "  not muted now"),
    ("2026-12-04T15:30+00:00", "  muted now: mute night"),  # 23:30 in Shanghai
])
def test_routes_says_whether_a_mute_holds_at_the_time(
        site: Path, capsys: pytest.CaptureFixture[str], at: str, said: str) -> None:
    code, out, _ = run(capsys, "notify", "routes", "-c", "site.yaml", "--severity", "major",
                       "--department", "engineering", "--at", at)
    assert code == 0
    assert [line for line in out if line.startswith("notify.")] == [
        "notify.routes[1]: match {department: [engineering]}, events all -> raised"]
    assert out[-1] == said


def test_routes_for_an_nc_no_route_takes(site: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    code, out, _ = run(capsys, "notify", "routes", "-c", "site.yaml", "--department",
                       "quality", "--event", "recurring", "--event", "raised")
    assert code == 0
    assert out[1].startswith("event: recurring, raised; at ")
    assert out[2:] == ["no route takes it: this NC notifies nobody"]


def test_routes_without_a_notify_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site.yaml").write_text("site: {id: tower-a}\n", encoding="utf-8")
    code, out, _ = run(capsys, "notify", "routes", "-c", "site.yaml")
    assert code == 0
    assert out[-1] == "no notify: section: no NC notifies anyone"


@pytest.mark.parametrize("argument", [["--severity", "urgent"], ["--event", "raise"],
                                      ["--category", "comfort"], ["--at", "tonight"]])
def test_routes_refuses_a_bad_argument_with_2(site: Path, capsys: pytest.CaptureFixture[str],
                                              argument: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["notify", "routes", "-c", "site.yaml", *argument])
    assert exit_.value.code == 2
    assert f"argument {argument[0]}: invalid" in capsys.readouterr().err


def test_routes_refuses_a_bad_config_with_2(site: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    site.write_text(SITE.replace("channels: [b]", "channels: [c]"), encoding="utf-8")
    code, out, err = run(capsys, "notify", "routes", "-c", "site.yaml")
    assert (code, out) == (2, [])
    assert err == ["site.yaml:4: notify: routes[2]: no channel named 'c' (channels: a, b)"]


def test_check_prints_notify_warnings_with_their_lines_and_exits_0(
        site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", "-c", "site.yaml")
    assert code == 0
    assert out == ["site.yaml: ok: site tower-a, 0 assets, 0 Modbus points, 0 MQTT "
                   "subscriptions, 0 standards"]
    assert err == [
        "warning: site.yaml:10: notify.routes: no catch-all route: NCs reach no channel for "
        "severity minor, major; any category; any event, unless their department matches a "
        "route (end the routes with `- match: {}` to hear of every NC)",
        "warning: site.yaml:21: notify.routes[2]: never reached: notify.routes[1] before it "
        "matches every NC and event this route does, and does not continue",
    ]


def test_check_of_a_clean_notify_section_warns_of_nothing(
        site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.write_text(SITE.replace("\nmqtt:", "\n    - channels: [a]\nmqtt:"), encoding="utf-8")
    site.write_text(site.read_text().replace("match: {department: engineering, severity: "
                                             "major}", "match: {department: quality}"))
    code, _, err = run(capsys, "check", "-c", "site.yaml")
    assert (code, err) == (0, [])


def test_notify_routes_as_a_process(site: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "agent.cli", "notify", "routes", "-c",
                             "site.yaml", "--severity", "minor", "--department",
                             "engineering"], cwd=site.parent, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "notify.routes[1]: match {department: [engineering]}, events all -> raised" in (
        result.stdout.splitlines())
    assert result.stderr == ""
