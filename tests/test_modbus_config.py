"""site.yaml's Modbus planning settings and cross-point checks, as `patrol check` reports them.

Each problem must come out as one exact `FILE:LINE: key: message` line; a conflict
between two points is reported at their device's line, naming both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.site import ConfigError, load_site

HEADER = """\
site:
  id: tower-a
assets:
  - id: CH-1
    type: chiller
modbus:
  devices:
"""
"""Lines 1-7; the first device starts at line 8."""


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def site(site_dir: Path, devices: str) -> Path:
    path = site_dir / "site.yaml"
    path.write_text(HEADER + devices, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_site(path)
    return [str(problem) for problem in info.value.problems]


def plc(*points: str, extra: str = "") -> str:
    """A TCP device at line 8 whose points (flow style, one a line) start at line 11."""
    body = "".join(f"        - {{asset: CH-1, {p}}}\n" for p in points)
    return f"""\
    - name: plc
      host: 127.0.0.1
{extra}      points:
{body}"""


AGREE = ("address, count, type and order (bits may differ)")


@pytest.mark.parametrize(("first", "second", "what"), [
    ("metric: a, address: 10, type: float32", "metric: b, address: 11", "address"),
    ("metric: a, address: 10, type: float32", "metric: b, address: 10", "count"),
    ("metric: a, address: 10, type: uint16", "metric: b, address: 10, type: int16", "type"),
    ("metric: a, address: 10, type: uint32", "metric: b, address: 10, type: float32", "type"),
    ("metric: a, address: 10, type: float32",
     "metric: b, address: 10, type: float32, order: CDAB", "order"),
])
def test_overlapping_points_that_disagree_are_reported_at_the_device(
    site_dir: Path, first: str, second: str, what: str
):
    path = site(site_dir, plc(first, "metric: c, address: 40", second))
    b_at = second.split("address: ")[1].split(",")[0]
    assert problems(path) == [
        f"site.yaml:8: modbus.devices[0]: holding points a (address 10) and b (address "
        f"{b_at}) overlap but disagree on {what}: points that share registers must have "
        f"the same {AGREE}",
    ]


def test_points_in_other_tables_or_intervals_may_share_addresses(site_dir: Path):
    path = site(site_dir, plc(
        "metric: a, address: 10, type: float32",
        "metric: b, address: 10, table: input",
        "metric: c, address: 10, table: coil, type: bool",
        "metric: d, address: 10, table: discrete, type: bool",
        "metric: e, address: 12, type: uint16",
    ))
    assert load_site(path).config.modbus is not None


def test_bits_of_one_word_and_the_word_itself_may_share_it(site_dir: Path):
    path = site(site_dir, plc(
        "metric: word, address: 8",
        "metric: door, address: 8, type: bool, bit: 2",
        "metric: alarm, address: 8, bit: 3",
        "metric: fault, address: 8, type: int16, bit: 15",
        "metric: nonzero, address: 8, type: bool",
    ))
    assert len(load_site(path).config.modbus.devices[0].points) == 5


def test_overlap_in_another_interval_still_counts(site_dir: Path):
    path = site(site_dir, plc("metric: a, address: 10, type: float32",
                              "metric: b, address: 11, interval: 1m"))
    assert problems(path)[0].startswith("site.yaml:8: modbus.devices[0]: holding points a ")


def test_planning_settings_have_bounds(site_dir: Path):
    path = site(site_dir, plc("metric: a, address: 0",
                              extra="      max_gap: -1\n      max_registers: 126\n"
                                    "      max_bits: 0\n"))
    assert problems(path) == [
        "site.yaml:10: modbus.devices[0].max_gap: Input should be greater than or equal to 0",
        "site.yaml:11: modbus.devices[0].max_registers: "
        "Input should be less than or equal to 125",
        "site.yaml:12: modbus.devices[0].max_bits: Input should be greater than or equal to 1",
    ]


def test_a_point_must_fit_in_one_read(site_dir: Path):
    path = site(site_dir, plc("metric: a, address: 0, type: float64",
                              extra="      max_registers: 2\n"))
    assert problems(path) == [
        "site.yaml:8: modbus.devices[0]: point a at 0 needs 4 registers but device 'plc' "
        "reads at most 2 at once",
    ]


def test_planning_settings_load(site_dir: Path):
    path = site(site_dir, plc("metric: a, address: 0",
                              extra="      max_gap: 8\n      max_registers: 60\n"))
    device = load_site(path).config.modbus.devices[0]
    assert (device.max_gap, device.max_registers, device.max_bits) == (8, 60, 2000)


def test_max_gap_defaults_to_zero(site_dir: Path):
    device = load_site(site(site_dir, plc("metric: a, address: 0"))).config.modbus.devices[0]
    assert device.max_gap == 0


def test_rtu_over_tcp_needs_a_host(site_dir: Path):
    path = site(site_dir, """\
    - name: gw
      transport: rtu_over_tcp
      serial_port: /dev/ttyUSB0
      points:
        - {asset: CH-1, metric: a, address: 0}
""")
    assert problems(path) == [
        "site.yaml:8: modbus.devices[0]: device 'gw': transport rtu_over_tcp needs host",
    ]


def test_rtu_over_tcp_devices_share_their_gateway_like_tcp(site_dir: Path):
    gateway = """\
    - name: {name}
      transport: {transport}
      host: 10.0.0.9
      port: 4001
      unit_id: {unit}
      points:
        - {{asset: CH-1, metric: {name}, address: 0}}
"""
    path = site(site_dir, gateway.format(name="m1", transport="rtu_over_tcp", unit=1)
                + gateway.format(name="m2", transport="rtu_over_tcp", unit=2))
    devices = load_site(path).config.modbus.devices
    assert [d.transport for d in devices] == ["rtu_over_tcp", "rtu_over_tcp"]
    path = site(site_dir, gateway.format(name="m1", transport="rtu_over_tcp", unit=1)
                + gateway.format(name="m2", transport="tcp", unit=2))
    assert problems(path) == [
        "site.yaml:6: modbus: device 'm2' shares rtu_over_tcp 10.0.0.9:4001 with "
        "device 'm1', so its transport must be rtu_over_tcp, not tcp",
    ]


def test_check_explains_the_planned_requests(site_dir: Path, capsys: pytest.CaptureFixture[str]):
    path = site(site_dir, plc("metric: a, address: 0, type: float32",
                              "metric: b, address: 4", "metric: c, address: 100",
                              extra="      max_gap: 2\n"))
    assert main(["check", "-c", str(path), "--explain-modbus", "--no-secrets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "plc (tcp 127.0.0.1:502, unit 1, max_gap 2, max_registers 125):",
        "  every 5s: 2 requests for 3 points",
        "    holding 0-4 (5 registers, 2 unused): CH-1.a@0, CH-1.b@4",
        "    holding 100 (1 register): CH-1.c@100",
    ]


def test_two_points_writing_one_series_are_refused_at_the_second(site_dir: Path):
    second = plc("metric: b, address: 1").replace("name: plc", "name: plc2")
    path = site(site_dir, plc("metric: a, address: 0", "metric: b, address: 4") + second)
    assert problems(path) == [
        "site.yaml:16: modbus.devices[1].points[0].metric: CH-1/b is already read by device "
        "'plc' point 1 (address 4): two points would write one series",
    ]


@pytest.mark.parametrize(("point", "message"), [
    ("metric: a, address: 0, scale: .nan", "points[0].scale: Input should be a finite number"),
    ("metric: a, address: 0, offset: .inf", "points[0].offset: Input should be a finite number"),
    ("metric: a, address: 0, nan_value: .nan",
     "points[0].nan_value: Input should be a finite number"),
    ("metric: a, address: 0, scale: 0", "points[0]: scale 0 would make every reading 0"),
    ("metric: a, address: 0, type: ascii, length: 4, scale: 0.1",
     "points[0]: scale: an ascii point holds text, not a number"),
    ("metric: a, address: 0, type: ascii, length: 4, offset: 1, nan_value: 0",
     "points[0]: nan_value, offset: an ascii point holds text, not a number"),
    ("metric: a, address: 0, table: coil, type: bool, order: DCBA",
     "points[0]: order applies to registers; a coil is one bit"),
    ("metric: a, address: 0, interval: 1ms",
     "points[0].interval: Input should be greater than or equal to 0.01"),
])
def test_point_settings_that_cannot_mean_anything_are_refused(
    site_dir: Path, point: str, message: str
):
    assert problems(site(site_dir, plc(point))) == [
        f"site.yaml:11: modbus.devices[0].{message}"]


def test_unit_id_0_on_a_serial_bus_is_refused_but_not_over_tcp(site_dir: Path):
    serial = """\
    - name: meter
      transport: rtu
      serial_port: /dev/ttyUSB0
      unit_id: 0
      points:
        - {asset: CH-1, metric: kwh, address: 0}
"""
    assert problems(site(site_dir, serial)) == [
        "site.yaml:8: modbus.devices[0]: device 'meter': unit_id 0 is the RTU broadcast "
        "address, which no device answers: use the device's own id (1-247)"]
    tcp = plc("metric: a, address: 0", extra="      unit_id: 0\n")
    assert load_site(site(site_dir, tcp)).config.modbus is not None
