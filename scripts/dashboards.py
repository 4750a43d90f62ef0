"""Write Grafana's dashboards in deploy/grafana/dashboards from the short lists below.

    .venv/bin/python scripts/dashboards.py

Three dashboards: the readings through a Prometheus-compatible source (VictoriaMetrics
stores field `value` of measurement `patrol` as `patrol_value`, tags as labels), the
readings through InfluxDB 1.x (InfluxQL), and Patrol's own metrics (docs/metrics.md).
tests/test_deploy_dashboards.py checks every metric and tag they name against a real
`/metrics` scrape and the line-protocol layout (docs/tsdb.md), and that these files are
what this script writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"
PROM = {"type": "prometheus", "uid": "${ds}"}
INFLUX = {"type": "influxdb", "uid": "${ds}"}
"""Each dashboard picks its data source in a variable (`ds`): provisioned or imported, it
finds the source by type, not by an id fixed here."""
READING_FILTER = 'site=~"$site",asset=~"$asset",metric=~"$metric"'


def _panel(number: int, title: str, targets: list[dict[str, Any]], source: dict[str, str],
           *, kind: str = "timeseries", unit: str = "short", width: int = 12) -> dict[str, Any]:
    return {"id": number, "type": kind, "title": title, "datasource": source,
            "gridPos": {"h": 8, "w": width, "x": (number - 1) % 2 * 12 if width == 12 else 0,
                        "y": (number - 1) // 2 * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{**t, "refId": chr(65 + i), "datasource": source}
                        for i, t in enumerate(targets)]}


def _prom(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend}


def _variable(name: str, query: str, source: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "type": "query", "datasource": source, "query": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}}


def _dashboard(uid: str, title: str, panels: list[dict[str, Any]],
               variables: list[dict[str, Any]], source_type: str) -> dict[str, Any]:
    source = {"name": "ds", "label": "Data source", "type": "datasource",
              "query": source_type, "refresh": 1, "current": {}}
    return {"uid": uid, "title": title, "tags": ["patrol"], "schemaVersion": 39,
            "version": 1, "time": {"from": "now-24h", "to": "now"}, "refresh": "1m",
            "templating": {"list": [source, *variables]}, "panels": panels}


def readings_prometheus() -> dict[str, Any]:
    variables = [_variable("site", "label_values(patrol_value, site)", PROM),
                 _variable("asset", 'label_values(patrol_value{site=~"$site"}, asset)', PROM),
                 _variable("metric", 'label_values(patrol_value{site=~"$site",'
                                     'asset=~"$asset"}, metric)', PROM)]
    panels = [
        _panel(1, "Readings", [_prom(f"patrol_value{{{READING_FILTER}}}",
                                     "{{asset}} {{metric}}")], PROM, width=24),
        _panel(2, "Share of bad readings", [_prom(
            f"1 - avg by (asset, metric) (avg_over_time(patrol_quality{{{READING_FILTER}}}"
            "[$__interval]))", "{{asset}} {{metric}}")], PROM, unit="percentunit"),
        _panel(3, "Last value", [_prom(f"last_over_time(patrol_value{{{READING_FILTER}}}[15m])",
                                       "{{asset}} {{metric}}")], PROM, kind="stat"),
    ]
    return _dashboard("patrol-readings-prom", "Patrol readings (Prometheus / VictoriaMetrics)",
                      panels, variables, "prometheus")


def readings_influxql() -> dict[str, Any]:
    where = ('"site" =~ /^$site$/ AND "asset" =~ /^$asset$/ AND "metric" =~ /^$metric$/ '
             "AND $timeFilter")
    variables = [_variable("site", 'SHOW TAG VALUES FROM "patrol" WITH KEY = "site"', INFLUX),
                 _variable("asset", 'SHOW TAG VALUES FROM "patrol" WITH KEY = "asset" WHERE '
                                    '"site" =~ /^$site$/', INFLUX),
                 _variable("metric", 'SHOW TAG VALUES FROM "patrol" WITH KEY = "metric" WHERE '
                                     '"site" =~ /^$site$/ AND "asset" =~ /^$asset$/', INFLUX)]

    def influx(select: str) -> dict[str, Any]:
        return {"query": f'SELECT {select} FROM "patrol" WHERE {where} GROUP BY '
                         'time($__interval), "asset", "metric" fill(null)',
                "rawQuery": True, "resultFormat": "time_series", "alias": "$tag_asset $tag_metric"}

    panels = [_panel(1, "Readings", [influx('mean("value")')], INFLUX, width=24),
              _panel(2, "Share of bad readings", [influx('1 - mean("quality")')], INFLUX,
                     unit="percentunit"),
              _panel(3, "Last value", [influx('last("value")')], INFLUX, kind="stat")]
    return _dashboard("patrol-readings-influxql", "Patrol readings (InfluxDB 1.x)", panels,
                      variables, "influxdb")


SELF: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("Readings per second, by source", "short", [
        ("sum by (instance, source) (rate(patrol_readings_total[5m]))", "{{instance}} {{source}}")],
     "timeseries"),
    ("Bad readings per second, by reason", "short", [
        ("sum by (reason) (rate(patrol_bad_readings_total[5m]))", "{{reason}}")], "timeseries"),
    ("Modbus request latency (p95), by device", "s", [
        ("histogram_quantile(0.95, sum by (le, device) "
         "(rate(patrol_modbus_request_duration_seconds_bucket[5m])))", "{{device}}")],
     "timeseries"),
    ("MQTT: connected, reconnects", "short", [
        ("patrol_mqtt_connected", "{{instance}} connected"),
        ("increase(patrol_mqtt_connects_total[1h])", "{{instance}} connects per hour")],
     "timeseries"),
    ("Buffer: readings and events waiting", "short", [
        ("patrol_buffer_readings", "{{instance}} readings"),
        ("patrol_buffer_events", "{{instance}} events")], "timeseries"),
    ("Buffer: bytes used of max_size", "bytes", [
        ("patrol_buffer_bytes", "{{instance}} used"),
        ("patrol_buffer_max_bytes", "{{instance}} max")], "timeseries"),
    ("TSDB lag: oldest reading not yet written", "s", [
        ("patrol_buffer_oldest_reading_age_seconds", "{{instance}}")], "timeseries"),
    ("TSDB writes: latency (p95) and errors", "s", [
        ("histogram_quantile(0.95, sum by (le) "
         "(rate(patrol_tsdb_write_duration_seconds_bucket[5m])))", "p95"),
        ("sum by (kind) (rate(patrol_tsdb_write_errors_total[5m]))", "errors {{kind}}")],
     "timeseries"),
    ("NC events: raised and delivered", "short", [
        ("sum by (type) (increase(patrol_rules_events_total[1h]))", "raised {{type}}"),
        ("increase(patrol_forward_events_delivered_total[1h])", "delivered")],
     "timeseries"),
    ("Forward lag: oldest undelivered NC event", "s", [
        ("patrol_forward_lag_seconds", "{{instance}}")], "timeseries"),
    ("Notifications and webhooks, by outcome", "short", [
        ("sum by (channel, outcome) (increase(patrol_notifications_total[1h]))",
         "{{channel}} {{outcome}}"),
        ("sum by (outcome) (increase(patrol_webhook_deliveries_total[1h]))",
         "webhooks {{outcome}}")], "timeseries"),
    ("Degraded, by reason", "short", [("patrol_degraded == 1", "{{instance}} {{reason}}")],
     "timeseries"),
]


def self_metrics() -> dict[str, Any]:
    panels = [_panel(i, title, [_prom(expr, legend) for expr, legend in queries], PROM,
                     unit=unit, kind=kind)
              for i, (title, unit, queries, kind) in enumerate(SELF, start=1)]
    return _dashboard("patrol-self", "Patrol: gateways and API", panels, [], "prometheus")


DASHBOARDS = {"readings-prometheus.json": readings_prometheus,
              "readings-influxql.json": readings_influxql, "patrol-self.json": self_metrics}


def render() -> dict[str, str]:
    return {name: json.dumps(make(), indent=2) + "\n" for name, make in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
