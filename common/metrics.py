"""Patrol's own metrics, every name and help text in one place (docs/metrics.md lists them).

Two kinds, so that hot paths pay nothing:

- *Scraped*: what a part already counts in plain integers (the MQTT collector's stats, the
  pipeline's counts, the buffer's rows) is read only when Prometheus asks: `SCRAPED` names
  them, and a collector built at the scrape (`agent.metrics`) fills `family(name)` with
  the values. Nothing is incremented twice.
- *Live*: what nobody counted before (latencies, write errors, deliveries) is a
  prometheus_client object below, updated where it happens: once per request, batch or
  attempt, never per MQTT message.

Labels are bounded: devices and subscriptions come from site.yaml, channels from `notify:`,
reasons and outcomes are the fixed sets written here, routes are the API's templates.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

disable_created_metrics()  # a `_created` sample beside every counter only doubles a scrape

Kind = Literal["counter", "gauge"]

BAD_REASONS = ("unavailable", "no_answer", "exception_reply", "decode_error")
"""Why a Modbus reading is bad: the device did not answer (or is backed off), one request
went unanswered, the device answered with an exception, the value could not be decoded."""
MQTT_REFUSALS = ("bad_payload", "partial_payload", "unknown_asset", "unmatched")
"""Why an MQTT message gave fewer readings than it names (`partial_payload`: some of its
metrics did not map) or none (the others)."""

SCRAPED: dict[str, tuple[Kind, str, tuple[str, ...]]] = {
    # collectors
    "patrol_readings": ("counter", "Readings collected, good and bad, by source (modbus, "
                        "mqtt) and device (the Modbus device's name, the MQTT subscription's "
                        "topic)", ("source", "device")),
    "patrol_bad_readings": ("counter", "Readings of bad quality a source produced, by "
                            "reason: " + ", ".join(BAD_REASONS),
                            ("source", "device", "reason")),
    "patrol_source_last_reading_timestamp_seconds": (
        "gauge", "When a source last gave a reading (Modbus: its device answered); absent "
        "until the first", ("source", "device")),
    "patrol_mqtt_messages": ("counter", "MQTT messages a subscription matched",
                             ("subscription",)),
    "patrol_mqtt_refused": ("counter", "MQTT messages refused in whole or part, by "
                            "reason: " + ", ".join(MQTT_REFUSALS) + " (unmatched: no "
                            "subscription, so an empty one)", ("subscription", "reason")),
    "patrol_mqtt_connects": ("counter", "Connections the broker accepted (reconnects are "
                             "all but the first)", ()),
    "patrol_mqtt_disconnects": ("counter", "Connections to the broker lost or closed", ()),
    "patrol_mqtt_connect_failures": ("counter", "Attempts to connect to the broker that "
                                     "failed or were refused", ()),
    "patrol_mqtt_connected": ("gauge", "1 while every broker connection is up", ()),
    "patrol_mqtt_pauses": ("counter", "Times reading MQTT paused because the pipeline was "
                           "behind", ()),
    # pipeline and rules
    "patrol_rules_readings": ("counter", "Readings the rules engine judged (each against "
                              "every standard covering its asset and metric)", ()),
    "patrol_rules_pairs": ("gauge", "(asset, standard) pairs the rules engine judges", ()),
    "patrol_pipeline_backlog": ("gauge", "Readings handed to the pipeline and not yet "
                                "judged", ()),
    "patrol_readings_clock_ahead": ("counter", "Readings dated more than 5 minutes ahead "
                                    "of this machine's clock: stored as bad, not judged", ()),
    "patrol_readings_dropped": ("counter", "Readings dropped, by reason: max_size (the "
                                "buffer's oldest, to stay under buffer.max_size), disk_full "
                                "(held in memory past the limit), unstorable (refused by "
                                "the buffer alone)", ("reason",)),
    # buffer (read from its file at the scrape)
    "patrol_buffer_readings": ("gauge", "Readings in the buffer not yet written to the "
                               "TSDB (from the oldest row to the newest)", ()),
    "patrol_buffer_events": ("gauge", "NC events and snapshots in the outbox not yet "
                             "delivered to the API", ()),
    "patrol_buffer_dead_letters": ("gauge", "Readings and events refused for good, kept "
                                   "in the buffer for a person", ()),
    "patrol_buffer_bytes": ("gauge", "Bytes of the buffer file in use (what "
                            "buffer.max_size bounds)", ()),
    "patrol_buffer_max_bytes": ("gauge", "buffer.max_size", ()),
    "patrol_buffer_oldest_reading_age_seconds": (
        "gauge", "Age of the oldest reading not yet written to the TSDB, by its own "
        "timestamp (0 when none)", ()),
    "patrol_buffer_writable": ("gauge", "0 while the buffer cannot take readings (disk "
                               "full: they wait in memory, sources unacknowledged)", ()),
    # writers
    "patrol_tsdb_readings_written": ("counter", "Readings the TSDB acknowledged", ()),
    "patrol_tsdb_dead_letters": ("counter", "Readings the TSDB refused for good "
                                 "(dead-lettered)", ()),
    "patrol_forward_events_delivered": ("counter", "NC events and snapshots the API "
                                        "confirmed", ()),
    "patrol_forward_lag_seconds": ("gauge", "While NC events wait for the API: seconds "
                                   "since the forwarder last delivered a batch or found "
                                   "the outbox empty (0 when none wait)", ()),
    # health
    "patrol_degraded": ("gauge", "1 while the reason makes /api/v1/health answer "
                        "degraded (docs/metrics.md)", ("reason",)),
}
"""Metrics read from the parts' own counters at the scrape: name -> (type, help, labels)."""


def family(name: str) -> CounterMetricFamily | GaugeMetricFamily:
    """An empty family of a `SCRAPED` metric, to add samples to."""
    kind, documentation, labels = SCRAPED[name]
    make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return make(name, documentation, labels=labels)


_LATENCY = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MODBUS_REQUEST_SECONDS = Histogram(
    "patrol_modbus_request_duration_seconds",
    "Modbus read requests answered (values or an exception reply), by device: from sending "
    "to the answer", ["device"], buckets=_LATENCY)
TSDB_WRITE_SECONDS = Histogram(
    "patrol_tsdb_write_duration_seconds",
    "Writes of a batch of line protocol to the TSDB, answered or not: compressing, "
    "sending, the answer", buckets=_LATENCY)
TSDB_WRITE_ERRORS = Counter(
    "patrol_tsdb_write_errors",
    "TSDB writes that failed, by kind: unreachable, redirect, client (4xx), server (5xx)",
    ["kind"])
RULES_EVENTS = Counter(
    "patrol_rules_events", "NC events the rules engine raised, by type", ["type"])
NOTIFICATIONS = Counter(
    "patrol_notifications",
    "Notification messages sent to a channel, by outcome: sent, retry (failed, tried "
    "again later), failed (refused for good)", ["channel", "outcome"])
WEBHOOK_DELIVERIES = Counter(
    "patrol_webhook_deliveries",
    "Webhook delivery attempts, by outcome: delivered, unreachable, redirect, client (4xx), "
    "server (5xx)", ["outcome"])
HTTP_REQUESTS = Counter(
    "patrol_http_requests",
    "API requests answered, by method, route template (unmatched: no route, or refused "
    "before routing) and status class (2xx, 4xx...)", ["method", "route", "status"])

LIVE = (MODBUS_REQUEST_SECONDS, TSDB_WRITE_SECONDS, TSDB_WRITE_ERRORS, RULES_EVENTS,
        NOTIFICATIONS, WEBHOOK_DELIVERIES, HTTP_REQUESTS)


def status_class(status: int | None) -> str:
    """`2xx`, `4xx`...; None (no answer) is `unreachable`."""
    return "unreachable" if status is None else f"{status // 100}xx"


def write_error_kind(status: int | None) -> str:
    """The `patrol_tsdb_write_errors` and `patrol_webhook_deliveries` word for an answer
    that was not 2xx."""
    if status is None:
        return "unreachable"
    if 300 <= status < 400:
        return "redirect"
    return "client" if status < 500 else "server"


def names() -> list[str]:
    """Every metric name Patrol defines, as exposed (counters with `_total`)."""
    scraped = [f"{name}_total" if kind == "counter" else name
               for name, (kind, _, _) in SCRAPED.items()]
    live = [f"{m._name}_total" if m._type == "counter" else m._name for m in LIVE]
    return scraped + live


__all__ = ["LIVE", "REGISTRY", "SCRAPED", "family", "names", "status_class",
           "write_error_kind"]
