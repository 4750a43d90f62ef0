"""site.yaml and standards loading: every problem is one `FILE:LINE: key.path: message` line.

Each test writes small files into a temporary directory (which is also the working
directory, so files are named as a person would type them) and compares the problems
`load_site` reports with the exact lines expected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.site import ConfigError, Site, load_site

HEADER = """\
site:
  id: tower-a
assets:
  - id: CH-1
    type: chiller
"""
"""Lines 1-5 of most site.yaml files below; what a test adds starts at line 6."""

TCP_DEVICE = """\
modbus:
  devices:
    - name: plc
      host: 127.0.0.1
      points:
"""
"""Lines 6-10 after HEADER; the device's points start at line 11."""

STANDARDS_GLOB = "standards: [standards/*.yaml]\n"


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path, **kwargs: bool) -> list[str]:
    """The problem lines load_site reports for `path` (it must fail)."""
    with pytest.raises(ConfigError) as info:
        load_site(path, **kwargs)
    lines = [str(problem) for problem in info.value.problems]
    assert str(info.value) == "\n".join(lines)
    return lines


def site_problems(site_dir: Path, text: str, standards: dict[str, str] | None = None
                  ) -> list[str]:
    """Write site.yaml (and standards/NAME files), then return the problems reported."""
    for name, body in (standards or {}).items():
        write(site_dir / "standards" / name, body)
    return problems(write(site_dir / "site.yaml", text))


def points(*items: str) -> str:
    """Flow-style Modbus points, one line each, under TCP_DEVICE (first at line 11)."""
    return "".join(f"        - {{{item}}}\n" for item in items)


def standard(id_: str, *extra: str, check: str = "{max: 8}") -> str:
    """One standard as a YAML list item of 4 + len(extra) lines."""
    lines = [f"  - id: {id_}", "    title: t", "    metric: chw_supply_temp",
             f"    check: {check}", *(f"    {line}" for line in extra)]
    return "\n".join(lines) + "\n"


# --- schema errors ---------------------------------------------------------------------


def test_wrong_enum_names_the_choices(site_dir: Path) -> None:
    text = HEADER + TCP_DEVICE + """\
        - {asset: CH-1, metric: a, address: 0}
        - {asset: CH-1, metric: b, address: 1}
        - asset: CH-1
          metric: c
          address: 2
          type: flaot32
"""
    assert site_problems(site_dir, text) == [
        "site.yaml:16: modbus.devices[0].points[2].type: 'flaot32' is not one of int16, "
        "uint16, int32, uint32, int64, uint64, float16, float32, float64, bool, ascii",
    ]


def test_unknown_key(site_dir: Path) -> None:
    text = HEADER + TCP_DEVICE + points("asset: CH-1, metric: a, address: 0, colour: red")
    assert site_problems(site_dir, text) == [
        "site.yaml:11: modbus.devices[0].points[0].colour: unknown key",
    ]


def test_password_key_points_to_env_and_file(site_dir: Path) -> None:
    text = HEADER + "mqtt:\n  url: mqtt://broker\n  password: hunter2\n"
    assert site_problems(site_dir, text) == [
        "site.yaml:8: mqtt.password: unknown key; secrets are never written in the file: use "
        "password_env (an environment variable) or password_file (a file holding it)",
    ]


def test_wrong_type(site_dir: Path) -> None:
    text = HEADER + """\
modbus:
  devices:
    - name: plc
      host: 127.0.0.1
      port: abc
      points:
        - {asset: CH-1, metric: a, address: 0}
"""
    assert site_problems(site_dir, text) == [
        "site.yaml:10: modbus.devices[0].port: "
        "Input should be a valid integer, unable to parse string as an integer",
    ]


def test_type_must_fit_its_table(site_dir: Path) -> None:
    text = HEADER + TCP_DEVICE + points(
        "asset: CH-1, metric: a, address: 0",
        "asset: CH-1, metric: b, table: coil, address: 4, type: float32",
    )
    assert site_problems(site_dir, text) == [
        "site.yaml:12: modbus.devices[0].points[1]: "
        "a coil point holds one bit: type must be bool, not float32",
    ]


def test_address_past_the_last_register(site_dir: Path) -> None:
    text = HEADER + TCP_DEVICE + points("asset: CH-1, metric: a, address: 65535, type: float32")
    assert site_problems(site_dir, text) == [
        "site.yaml:11: modbus.devices[0].points[0]: "
        "address 65535 + 2 registers of float32 runs past 65535",
    ]


def test_last_register_itself_is_fine(site_dir: Path) -> None:
    text = HEADER + TCP_DEVICE + points("asset: CH-1, metric: a, address: 65535, type: uint16")
    assert load_site(write(site_dir / "site.yaml", text)).config.modbus is not None


def test_bad_timezone(site_dir: Path) -> None:
    text = "site:\n  id: tower-a\n  timezone: Mars/Olympus\n"
    assert site_problems(site_dir, text) == [
        "site.yaml:3: site.timezone: 'Mars/Olympus' is not an IANA time zone like Asia/Shanghai",
    ]


def test_timezone_naming_a_region_is_a_problem_not_a_crash(site_dir: Path) -> None:
    text = "site:\n  id: tower-a\n  timezone: Asia\n"
    assert site_problems(site_dir, text) == [
        "site.yaml:3: site.timezone: 'Asia' is not an IANA time zone like Asia/Shanghai",
    ]


def test_every_schema_problem_of_a_file_at_once(site_dir: Path) -> None:
    text = """\
site:
  id: Tower_A
  timezone: Mars/Olympus
assets:
  - id: CH-1
    colour: red
mqtt:
  url: http://broker
"""
    assert site_problems(site_dir, text) == [
        "site.yaml:2: site.id: String should match pattern '^[a-z0-9][a-z0-9-]*$'",
        "site.yaml:3: site.timezone: 'Mars/Olympus' is not an IANA time zone like Asia/Shanghai",
        "site.yaml:6: assets[0].colour: unknown key",
        "site.yaml:8: mqtt.url: 'http://broker' is not an MQTT URL like mqtt://host:1883 "
        "or mqtts://host",
    ]


# --- YAML itself -----------------------------------------------------------------------


def test_yaml_syntax_error_reports_its_line(site_dir: Path) -> None:
    text = HEADER + "  - id: CH-2\n     type: pump\n"
    assert site_problems(site_dir, text) == [
        "site.yaml:7: YAML syntax error: mapping values are not allowed here",
    ]


def test_an_alias_inside_the_node_it_names_is_a_problem_not_a_recursion(site_dir: Path):
    text = "site:\n  id: tower-a\nassets: &all\n  - id: CH-1\n  - *all\n"
    assert site_problems(site_dir, text) == [
        "site.yaml:3: this node holds an alias to itself (a loop)",
    ]


def test_a_billion_laughs_is_refused_at_once(site_dir: Path) -> None:
    laughs = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n, name in enumerate("bcdef"):
        previous = "abcdef"[n]
        laughs.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    text = "\n".join(laughs) + "\nsite:\n  id: tower-a\nassets: [*f]\n"
    # 10**6 strings behind one alias; `assets` would hold them all
    assert site_problems(site_dir, text) == [
        "site.yaml:6: aliases expand this to over 1,000,000 values",
    ]


def test_yaml_nested_past_the_parser_is_a_problem(site_dir: Path) -> None:
    text = "site:\n  id: tower-a\nassets: " + "[" * 3000 + "]" * 3000 + "\n"
    assert site_problems(site_dir, text) == ["site.yaml:1: YAML nested too deeply"]


def test_shared_settings_by_alias_still_load(site_dir: Path) -> None:
    text = HEADER + TCP_DEVICE.replace("host: 127.0.0.1", "host: &plc 127.0.0.1") + points(
        "asset: CH-1, metric: a, address: 0") + """\
    - name: plc2
      host: *plc
      points:
        - {asset: CH-1, metric: b, address: 0}
"""
    config = load_site(write(site_dir / "site.yaml", text)).config
    assert config.modbus is not None
    assert [d.host for d in config.modbus.devices] == ["127.0.0.1", "127.0.0.1"]


def test_duplicate_yaml_key(site_dir: Path) -> None:
    text = HEADER + "site:\n  id: tower-b\n"
    assert site_problems(site_dir, text) == [
        "site.yaml:6: site: duplicate key (the earlier value would be silently ignored)",
    ]


def test_nested_duplicate_yaml_key(site_dir: Path) -> None:
    text = "site:\n  id: tower-a\n  name: A\n  name: B\n"
    assert site_problems(site_dir, text) == [
        "site.yaml:4: site.name: duplicate key (the earlier value would be silently ignored)",
    ]


@pytest.mark.parametrize("text", ["", "- a list\n"])
def test_not_a_mapping(site_dir: Path, text: str) -> None:
    assert site_problems(site_dir, text) == ["site.yaml:1: expected a mapping with a site: section"]


# --- cross references ------------------------------------------------------------------


def test_duplicate_asset_ids(site_dir: Path) -> None:
    text = HEADER + "  - id: CH-2\n  - id: CH-1\n"
    assert site_problems(site_dir, text) == ["site.yaml:7: assets[2].id: duplicate asset id 'CH-1'"]


def test_point_naming_an_unknown_asset(site_dir: Path) -> None:
    text = HEADER + TCP_DEVICE + points(
        "asset: CH-1, metric: a, address: 0",
        "asset: CH-9, metric: b, address: 1",
    )
    assert site_problems(site_dir, text) == [
        "site.yaml:12: modbus.devices[0].points[1].asset: unknown asset 'CH-9'",
    ]


def test_mqtt_subscription_naming_an_unknown_asset(site_dir: Path) -> None:
    text = HEADER + """\
mqtt:
  url: mqtt://broker
  subscriptions:
    - topic: plant/{asset}/env
      metrics: {air_temp: $.temperature}
    - topic: plant/boiler/flow
      asset: BLR-1
      format: number
      metric: flow
"""
    assert site_problems(site_dir, text) == [
        "site.yaml:12: mqtt.subscriptions[1].asset: unknown asset 'BLR-1'",
    ]


# --- standards files -------------------------------------------------------------------


def test_unknown_check_kind_is_reported_in_the_standards_file(site_dir: Path) -> None:
    stds = "standards:\n" + standard("S1") + standard("S2", check="{kind: bogus, max: 1}")
    assert site_problems(site_dir, HEADER + STANDARDS_GLOB, {"a.yaml": stds}) == [
        "standards/a.yaml:9: standards[1].check.kind: "
        "'bogus' is not one of range, equals, rate, stale, window, budget, transitions",
    ]


def test_duplicate_standard_id_across_files_names_the_first(site_dir: Path) -> None:
    files = {
        "a.yaml": "standards:\n" + standard("S1") + standard("S2"),
        "b.yaml": "# more\nstandards:\n" + standard("S2"),
    }
    assert site_problems(site_dir, HEADER + STANDARDS_GLOB, files) == [
        "standards/b.yaml:3: standards[0].id: duplicate standard id 'S2' "
        "(first at standards/a.yaml:6)",
    ]


def test_standards_glob_matching_nothing(site_dir: Path) -> None:
    text = HEADER + "standards:\n  - standards/*.yaml\n  - rules/*.yml\n"
    write(site_dir / "standards" / "a.yaml", "standards:\n" + standard("S1"))
    assert site_problems(site_dir, text) == [
        "site.yaml:8: standards[1]: 'rules/*.yml' matches no file",
    ]


def test_bad_duration(site_dir: Path) -> None:
    stds = "standards:\n" + standard("S1", "for: 10q")
    assert site_problems(site_dir, HEADER + STANDARDS_GLOB, {"a.yaml": stds}) == [
        "standards/a.yaml:6: standards[0].for: '10q' is not a duration like 500ms, 5s, 10m, "
        "24h or 7d",
    ]


def test_expr_outside_the_whitelist_is_refused_at_its_key(site_dir: Path) -> None:
    stds = "standards:\n" + ("  - id: S1\n    title: t\n    expr: __import__('os').getcwd()\n"
                             "    check: {max: 8}\n")
    assert site_problems(site_dir, HEADER + STANDARDS_GLOB, {"a.yaml": stds}) == [
        "standards/a.yaml:4: standards[0].expr: that call is not allowed (only numbers, "
        "metric names, + - * / % **, comparisons, and/or/not, abs, min, max)",
    ]


def test_an_expr_past_the_size_limits_is_a_problem_at_its_key(site_dir: Path) -> None:
    """It used to stop the loader with RecursionError (and a reload with it)."""
    long_sum = " + ".join(f"m{i % 7}" for i in range(3000))
    deep = "+".join(["a"] * 60)
    stds = "standards:\n" + (f"  - id: S1\n    title: t\n    expr: {long_sum}\n"
                             f"    check: {{max: 8}}\n  - id: S2\n    title: t\n"
                             f"    expr: {deep}\n    check: {{max: 8}}\n")
    assert site_problems(site_dir, HEADER + STANDARDS_GLOB, {"a.yaml": stds}) == [
        "standards/a.yaml:4: standards[0].expr: the expression has 14,997 characters; at "
        "most 2,000 are allowed",
        "standards/a.yaml:8: standards[1].expr: the expression is nested more than 50 levels "
        "deep (a long sum counts one level per term)",
    ]


def test_a_key_holding_a_line_break_stays_on_its_problem_line(site_dir: Path) -> None:
    assert site_problems(site_dir, HEADER + '    "a\\rb": 1\n') == [
        "site.yaml:6: assets[0]['a\\rb']: unknown key",
    ]


def test_unreadable_schedule_is_refused_at_its_key(site_dir: Path) -> None:
    stds = "standards:\n" + standard("S1", "active: Mon-Fry 08:00-18:00")
    assert site_problems(site_dir, HEADER + STANDARDS_GLOB, {"a.yaml": stds}) == [
        "standards/a.yaml:6: standards[0].active: 'mon-fry' is not a day or range like Mon-Fri",
    ]


def test_standard_applying_to_an_unknown_asset(site_dir: Path) -> None:
    stds = "standards:\n" + standard("S1", "applies_to: {assets: [CH-1, CH-9]}")
    assert site_problems(site_dir, HEADER + STANDARDS_GLOB, {"a.yaml": stds}) == [
        "standards/a.yaml:6: standards[0].applies_to.assets[1]: unknown asset 'CH-9'",
    ]


def test_yaml_error_in_a_standards_file(site_dir: Path) -> None:
    stds = "standards:\n  - id: S1\n    title: [t\n"
    reported = site_problems(site_dir, HEADER + STANDARDS_GLOB, {"a.yaml": stds})
    assert len(reported) == 1
    assert reported[0].startswith("standards/a.yaml:4: YAML syntax error: ")


# --- secrets ---------------------------------------------------------------------------

SECRET_SITE = HEADER + "mqtt:\n  url: mqtt://broker\n  password_env: PATROL_TEST_MQTT_PASSWORD\n"


def test_secret_env_var_not_set(site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATROL_TEST_MQTT_PASSWORD", raising=False)
    assert site_problems(site_dir, SECRET_SITE) == [
        "site.yaml:8: mqtt.password_env: environment variable PATROL_TEST_MQTT_PASSWORD "
        "is not set",
    ]


def test_a_secret_file_that_cannot_be_opened_or_decoded_is_a_problem_at_its_key(
        site_dir: Path) -> None:
    """A NUL in the path stopped `patrol check` with a ValueError traceback (exit 1)."""
    (site_dir / "not-utf8").write_bytes(b"\xff\xfe")
    site = 'site: {id: tower-a}\nmqtt:\n  password_file: "pass\\0word"\n' \
        "influxdb: {url: 'http://127.0.0.1:8086', bucket: b, token_file: not-utf8}\n"
    assert site_problems(site_dir, site) == [
        f"site.yaml:3: mqtt.password_file: cannot read secret file "
        f"'{site_dir}/pass\\x00word': embedded null byte",
        f"site.yaml:4: influxdb.token_file: cannot read secret file '{site_dir}/not-utf8': "
        "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
    ]


def test_a_tsdb_token_beside_a_user_name_is_refused_at_the_user_name(site_dir: Path) -> None:
    """Each makes an Authorization header and one request sends one: v1 used the token
    and v2 the user name, silently."""
    site = ("site: {id: tower-a}\ninfluxdb:\n  url: 'http://127.0.0.1:8086'\n  bucket: b\n"
            "  token_env: PATROL_TEST_INFLUX_TOKEN\n  username: patrol\n")
    assert site_problems(site_dir, site) == [
        "site.yaml:6: influxdb.username: give either username (HTTP Basic) or "
        "token_env/token_file, not both"]


def test_secret_env_var_set(site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATROL_TEST_MQTT_PASSWORD", "s3cret")
    site = load_site(write(site_dir / "site.yaml", SECRET_SITE))
    assert site.config.mqtt is not None
    assert site.config.mqtt.password_env == "PATROL_TEST_MQTT_PASSWORD"


def test_secrets_are_not_needed_when_not_asked_for(site_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATROL_TEST_MQTT_PASSWORD", raising=False)
    assert load_site(write(site_dir / "site.yaml", SECRET_SITE), secrets=False).id == "tower-a"


# --- several problems, one run ---------------------------------------------------------


def test_cross_reference_secret_and_standards_problems_together(
        site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATROL_TEST_MQTT_PASSWORD", raising=False)
    text = HEADER + """\
  - id: CH-1
mqtt:
  url: mqtt://broker
  password_env: PATROL_TEST_MQTT_PASSWORD
  subscriptions:
    - {topic: plant/boiler/flow, asset: BLR-1, format: number, metric: flow}
standards: [standards/*.yaml, missing/*.yaml]
"""
    stds = "standards:\n" + ("  - id: S1\n    title: t\n    expr: a - b\n"
                             "    check: {kind: stale, after: 5m}\n")
    assert site_problems(site_dir, text, {"a.yaml": stds}) == [
        "site.yaml:6: assets[1].id: duplicate asset id 'CH-1'",
        "site.yaml:11: mqtt.subscriptions[0].asset: unknown asset 'BLR-1'",
        "site.yaml:9: mqtt.password_env: environment variable PATROL_TEST_MQTT_PASSWORD "
        "is not set",
        "standards/a.yaml:2: standards[0]: a stale check watches one metric: use metric, "
        "not expr",
        "site.yaml:12: standards[1]: 'missing/*.yaml' matches no file",
    ]


def test_schema_and_standards_problems_together(site_dir: Path) -> None:
    text = HEADER + "buffer: {max_size: lots}\n" + STANDARDS_GLOB
    stds = "standards:\n" + standard("S1", "for: 10q")
    assert site_problems(site_dir, text, {"a.yaml": stds}) == [
        "site.yaml:6: buffer.max_size: 'lots' is not a size like 100MB or 1GB",
        "standards/a.yaml:6: standards[0].for: '10q' is not a duration like 500ms, 5s, 10m, "
        "24h or 7d",
    ]


# --- relative paths --------------------------------------------------------------------


def test_relative_paths_follow_the_config_file_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "conf"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    write(config_dir / "secrets" / "mqtt.txt", "s3cret\n")
    write(config_dir / "standards" / "a.yaml", "standards:\n" + standard("S1"))
    path = write(config_dir / "site.yaml", HEADER + """\
mqtt:
  url: mqtt://broker
  password_file: secrets/mqtt.txt
buffer: {path: data/buffer.sqlite}
server: {database: "sqlite:///data/patrol.sqlite"}
standards: [standards/*.yaml]
""")
    site = load_site(path)
    assert site.config.buffer.path == config_dir / "data" / "buffer.sqlite"
    database = (config_dir / "data" / "patrol.sqlite").resolve()
    assert site.config.server.database == f"sqlite:///{database}"
    assert site.config.mqtt is not None
    assert site.config.mqtt.password_file == config_dir / "secrets" / "mqtt.txt"
    assert [s.id for s in site.standards] == ["S1"]


def test_default_buffer_path_follows_the_config_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    site = load_site(write(tmp_path / "conf" / "site.yaml", HEADER))
    assert site.config.buffer.path == tmp_path / "conf" / "data" / "buffer.sqlite"


def test_default_database_follows_the_config_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    site = load_site(write(tmp_path / "conf" / "site.yaml", HEADER))
    expected = (tmp_path / "conf" / "data" / "patrol.sqlite").resolve()
    assert site.config.server.database == f"sqlite:///{expected}"


# --- a valid, complete site --------------------------------------------------------------

FULL_SITE = """\
site:
  id: tower-a
  name: Tower A
  timezone: Asia/Shanghai

assets:
  - id: CH-1
    type: chiller
    name: Chiller 1
    location: B2 plant room
    department: engineering
    tags: {building: A, floor: B2}
  - id: PR-1
    type: room
    department: facilities

modbus:
  devices:
    - name: ch1-plc
      transport: tcp
      host: 127.0.0.1
      port: 502
      unit_id: 1
      interval: 5s
      timeout: 1s
      retries: 2
      points:
        - asset: CH-1
          metric: chw_supply_temp
          table: holding
          address: 100
          type: float32
          order: ABCD
          scale: 0.1
          offset: 0
          unit: degC
        - {asset: CH-1, metric: running, address: 110, type: uint16, bit: 3}
    - name: rs485-meter
      transport: rtu
      serial_port: /dev/ttyUSB0
      baudrate: 9600
      parity: E
      points:
        - {asset: CH-1, metric: energy, table: input, address: 0, type: uint32}

mqtt:
  url: mqtt://127.0.0.1:1883
  username: patrol
  password_env: PATROL_TEST_MQTT_PASSWORD
  client_id: patrol-tower-a
  qos: 1
  subscriptions:
    - topic: plant/{asset}/env
      format: json
      metrics:
        air_temp: $.temperature
        humidity: $.humidity
      timestamp: $.ts
      units: {air_temp: degC}

influxdb:
  url: http://127.0.0.1:8086
  api: v2
  org: plant
  bucket: readings
  token_env: PATROL_TEST_INFLUX_TOKEN

buffer:
  path: data/buffer.sqlite
  max_size: 1GB

standards:
  - standards/*.yaml

forward:
  url: https://central.example:8080
  token_env: PATROL_TEST_AGENT_TOKEN

server:
  listen: 127.0.0.1:8080
  database: sqlite:///data/patrol.sqlite

notify:
  channels:
    - name: eng-webhook
      kind: webhook
      url: https://chat.example/hook
    - name: quality-mail
      kind: email
      smtp: smtp://127.0.0.1:25
      from: patrol@example.com
      to: [quality@example.com]
  routes:
    - match: {severity: [critical, major], department: engineering}
      channels: [eng-webhook]
      remind_every: 2h
    - match: {}
      channels: [quality-mail]
"""

FULL_STANDARDS = """\
standards:
  - id: HVAC-CHW-SUPPLY
    version: 3
    title: Chilled water supply temperature 6-8 degC
    clause: O&M manual 4.2
    category: equipment
    applies_to:
      assets: [CH-1]
      asset_types: [chiller]
      tags: {building: A}
    metric: chw_supply_temp
    check: {min: 6, max: 8}
    for: 10m
    clear_after: 5m
    deadband: 0.2
    severity: major
    department: engineering
    rectify_within: 24h
    verify_for: 1h
    on_recovery: keep_open
  - id: HVAC-CHILLER-RUNNING
    title: Chiller runs
    applies_to: {asset_types: [chiller]}
    metric: running
    check: {kind: equals, value: 1}
    severity: critical
"""


@pytest.fixture
def full_site(site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MQTT_PASSWORD", "INFLUX_TOKEN", "AGENT_TOKEN"):
        monkeypatch.setenv(f"PATROL_TEST_{name}", "s3cret")
    write(site_dir / "standards" / "plant.yaml", FULL_STANDARDS)
    return write(site_dir / "site.yaml", FULL_SITE)


def test_full_example_loads(full_site: Path) -> None:
    site: Site = load_site(full_site)
    config = site.config
    assert site.id == "tower-a"
    assert config.site.timezone == "Asia/Shanghai"
    assert [a.id for a in config.assets] == ["CH-1", "PR-1"]
    assert config.modbus is not None
    assert [len(d.points) for d in config.modbus.devices] == [2, 1]
    assert config.mqtt is not None and len(config.mqtt.subscriptions) == 1
    assert config.buffer.max_size == 10**9
    assert [s.id for s in site.standards] == ["HVAC-CHW-SUPPLY", "HVAC-CHILLER-RUNNING"]
    chw = site.standards[0]
    assert (chw.version, chw.for_, chw.clear_after, chw.deadband) == (3, 600, 300, 0.2)
    assert (chw.rectify_within, chw.verify_for) == (86400, 3600)
    assert site.standards[1].check.kind == "equals"


# --- the CLI ---------------------------------------------------------------------------


def patrol(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_check_reports_problems_and_exits_2(site_dir: Path) -> None:
    text = HEADER + TCP_DEVICE + """\
        - asset: CH-9
          metric: c
          address: 2
          type: flaot32
"""
    write(site_dir / "site.yaml", text)
    result = patrol("check", "-c", "site.yaml", cwd=site_dir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "site.yaml:14: modbus.devices[0].points[0].type: 'flaot32' is not one of int16, "
        "uint16, int32, uint32, int64, uint64, float16, float32, float64, bool, ascii",
    ]


def test_check_reports_a_yaml_error_without_traceback(site_dir: Path) -> None:
    write(site_dir / "site.yaml", HEADER + "  - id: CH-2\n     type: pump\n")
    result = patrol("check", "-c", "site.yaml", cwd=site_dir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "site.yaml:7: YAML syntax error: mapping values are not allowed here" in result.stderr


def test_check_of_an_expr_the_parser_cannot_take_exits_2_with_file_and_line(
        site_dir: Path) -> None:
    """`patrol check` exited 1 with a RecursionError traceback."""
    long_sum = " + ".join(["chw_supply_temp"] * 3000)
    write(site_dir / "site.yaml", HEADER + STANDARDS_GLOB)
    write(site_dir / "standards" / "a.yaml", f"standards:\n  - id: S1\n    title: t\n"
                                              f"    expr: {long_sum}\n    check: {{max: 8}}\n")
    result = patrol("check", "-c", "site.yaml", cwd=site_dir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "standards/a.yaml:4: standards[0].expr: the expression has 53,997 characters; at "
        "most 2,000 are allowed",
    ]


def test_check_of_a_valid_site_says_ok(full_site: Path, site_dir: Path) -> None:
    result = patrol("check", "-c", str(full_site), cwd=site_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "site.yaml: ok: site tower-a, 2 assets, 3 Modbus points, 1 MQTT subscriptions, "
        "2 standards",
    ]


def test_schema_prints_a_json_schema_of_site_yaml(tmp_path: Path) -> None:
    result = patrol("schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "site" in schema["properties"]
    assert "site" in schema["required"]
