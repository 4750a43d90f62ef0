"""deploy/: Grafana's dashboards name only metrics, labels, measurements, fields and tags
Patrol writes, and the compose file and Dockerfile hold together (there is no Docker
engine here to run them: docs/deploy.md says so).

The metric names and labels are the documented ones (docs/metrics.md), which
tests/test_metrics.py holds equal to what the registry serves; the readings' layout is
what `LineSerializer` writes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from agent.tsdb import LineSerializer
from collector.reading import Reading, bad
from scripts import dashboards

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SCRAPER_LABELS = {"instance", "job", "le"}
"""Labels the scraper or the histogram add: not Patrol's own."""


def documented() -> dict[str, set[str]]:
    """Each documented metric's labels, by the names a query uses (histograms' series)."""
    names: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `(patrol_[a-z_]+)` \| (\w+) \| ([^|]*) \|",
                          (ROOT / "docs" / "metrics.md").read_text(), re.M):
        name, kind, labels = row
        label_set = {label.strip() for label in labels.split(",") if label.strip()}
        suffixes = ("_bucket", "_count", "_sum") if kind == "histogram" else ("",)
        for suffix in suffixes:
            names[name + suffix] = label_set
    return names


def queries(board: dict[str, Any]) -> list[str]:
    return [target.get("expr") or target.get("query") or ""
            for panel in board["panels"] for target in panel["targets"]]


def boards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text())
            for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))}


def test_the_dashboards_are_what_the_script_writes() -> None:
    written = {name: (DEPLOY / "grafana" / "dashboards" / name).read_text()
               for name in dashboards.DASHBOARDS}
    assert written == dashboards.render(), "run: .venv/bin/python scripts/dashboards.py"
    assert set(boards()) == set(dashboards.DASHBOARDS)


def test_the_self_dashboard_names_only_documented_metrics_and_labels() -> None:
    known = documented()
    board = boards()["patrol-self.json"]
    used = 0
    for expr in queries(board):
        for name in re.findall(r"\b(patrol_[a-z_]+)", expr):
            assert name in known, (name, expr)
            used += 1
        metric_labels = set().union(*(known[n] for n in re.findall(r"\b(patrol_[a-z_]+)",
                                                                    expr)))
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (label.strip() for label in group.split(",")):
                assert label in metric_labels | SCRAPER_LABELS, (label, expr)
        for label in re.findall(r"\{\{(\w+)\}\}", " ".join(
                t["legendFormat"] for p in board["panels"] for t in p["targets"]
                if t["expr"] == expr)):
            assert label in metric_labels | SCRAPER_LABELS, (label, expr)
    assert used >= 15
    covered = {name.removesuffix("_bucket") for expr in queries(board)
               for name in re.findall(r"\b(patrol_[a-z_]+)", expr)}
    for wanted in ("patrol_readings_total", "patrol_bad_readings_total",
                   "patrol_modbus_request_duration_seconds", "patrol_mqtt_connects_total",
                   "patrol_buffer_readings", "patrol_buffer_bytes",
                   "patrol_buffer_oldest_reading_age_seconds",
                   "patrol_tsdb_write_duration_seconds", "patrol_tsdb_write_errors_total",
                   "patrol_rules_events_total", "patrol_forward_lag_seconds",
                   "patrol_notifications_total", "patrol_webhook_deliveries_total"):
        assert wanted in covered, wanted  # what issue 17 asks Patrol to measure is shown


def _layout() -> tuple[str, set[str], set[str]]:
    """The measurement, tag keys and field keys of the lines Patrol writes."""
    serializer = LineSerializer("patrol", "tower-a", {"CH-1": ("chiller", "B2")})
    lines = [serializer.line(Reading("CH-1", "chw_supply_temp", 7.5, 1.7e9, source="mqtt")),
             serializer.line(Reading("CH-1", "chw_supply_temp", float("nan"), 1.7e9,
                                     bad("no answer"), source="mqtt"))]
    tags: set[str] = set()
    fields: set[str] = set()
    measurement = ""
    for line in lines:
        head, field_part = re.fullmatch(r"(\S+) (.+) \d+", line).groups()  # type: ignore[union-attr]
        measurement, *pairs = head.split(",")
        tags |= {pair.split("=")[0] for pair in pairs}
        fields |= set(re.findall(r'(?:^|,)(\w+)=(?:"(?:[^"\\]|\\.)*"|[^,]*)', field_part))
    return measurement, tags, fields


def test_the_readings_dashboards_name_the_measurement_fields_and_tags_written() -> None:
    measurement, tags, fields = _layout()
    assert measurement == "patrol" and {"site", "asset", "metric"} <= tags
    # VictoriaMetrics: field f of measurement m is the metric m_f, tags are labels
    prometheus = boards()["readings-prometheus.json"]
    exprs = queries(prometheus) + [v["query"] for v in prometheus["templating"]["list"]
                                   if v["type"] == "query"]
    for expr in exprs:
        for name in re.findall(r"\b(patrol_[a-z_]+)", expr):
            assert name.removeprefix(f"{measurement}_") in fields, name
        for label in re.findall(r"(\w+)=~", expr) + re.findall(r"by \(([^)]*)\)", expr):
            for one in label.split(","):
                assert one.strip() in tags, (one, expr)
    influx = boards()["readings-influxql.json"]
    texts = queries(influx) + [v["query"] for v in influx["templating"]["list"]
                               if v["type"] == "query"]
    for text in texts:
        assert f'FROM "{measurement}"' in text, text
        for field in re.findall(r'(?:mean|last)\("(\w+)"\)', text):
            assert field in fields, (field, text)
        for tag in re.findall(r'"(\w+)" =~', text) + re.findall(r'KEY = "(\w+)"', text):
            assert tag in tags, (tag, text)


def test_compose_builds_the_api_and_provisions_grafana_with_what_is_here() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"api", "postgres", "mosquitto", "victoria-metrics", "grafana"}
    assert services["api"]["build"]["dockerfile"] == "deploy/Dockerfile"
    ignored = set((DEPLOY / ".gitignore").read_text().split())
    assert {"central/db-password", "central/metrics-token"} <= ignored  # secrets: never
    for service in services.values():  # every other file a service mounts is in deploy/
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source[2:] not in ignored:
                assert (DEPLOY / source).exists(), source
    central = yaml.safe_load((DEPLOY / "central" / "site.yaml").read_text())
    assert central["server"]["listen"].startswith("0.0.0.0:8080")
    assert "@postgres:5432/" in central["server"]["database"]
    assert "password" not in central["server"]["database"].split("@")[0]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/patrol.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://victoria-metrics:8428"
    for board in boards().values():  # a data source picked by type, not a fixed id
        assert board["templating"]["list"][0]["type"] == "datasource"


def test_the_dockerfile_copies_what_exists_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / source).exists(), source
    assert re.search(r"^USER patrol$", text, re.M)
    assert "/api/v1/health" in text and "HEALTHCHECK" in text
    assert '"api", "-c", "/etc/patrol/site.yaml"' in text


def test_the_central_site_yaml_is_valid() -> None:
    from agent.site import load_site

    site = load_site(DEPLOY / "central" / "site.yaml", secrets=False)
    assert site.config.server.database_password_file is not None
