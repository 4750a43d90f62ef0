"""Writes docs/reference/ from the code itself, so the reference cannot drift from it.

- configuration.md: every key of site.yaml and of a standards file from the pydantic models
  (type, default); what a key means comes from its `Field(description=...)` or, where the
  model has none, from MEANINGS below.
- cli.md: every command's `--help`, from the argument parser.
- lifecycle.md: the NC state diagram (Mermaid) from api/workflow.py's tables.
- api.md: every REST route with its parameters, from the app's OpenAPI document.

tests/test_reference_docs.py fails when a committed page differs from what this writes,
when a key has no meaning, or when MEANINGS names a key that is gone.

    python scripts/reference.py            # rewrite docs/reference/*.md
    python scripts/reference.py --check    # exit 1 when a page is out of date
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.cli import _parser  # noqa: E402
from agent.site import SiteConfig  # noqa: E402
from api.workflow import ACTIONS, AUTOMATIC, NEW, STATES  # noqa: E402
from common.config_types import format_duration, parse_duration, parse_size  # noqa: E402
from rules.standard import StandardsFile  # noqa: E402

REFERENCE = ROOT / "docs" / "reference"

MEANINGS: dict[str, str] = {
    # site
    "site": "who this site is",
    "site.id": "lower-case letters, digits and `-`; in every reading, NC and event",
    "site.name": "shown to people",
    "site.timezone": "IANA name (`Asia/Shanghai`); schedules and calendar periods use it",
    "site.kpi_targets.target": "green at or past it",
    "site.kpi_targets.amber": "amber up to it, red beyond",
    "assets": "every piece of equipment or room the site judges",
    "assets.id": "unique; readings and NCs name it",
    "assets.type": "selects standards (`applies_to.asset_types`); a TSDB tag",
    "assets.name": "shown to people",
    "assets.location": "a TSDB tag",
    "assets.department": "owner of this asset's NCs unless a standard names another",
    "assets.tags": "free labels; standards select on them (`applies_to.tags`)",
    # modbus
    "modbus": "Modbus devices polled by the agent (docs/modbus.md)",
    "modbus.devices": "one entry per device (a PLC, a meter, a gateway's unit)",
    "modbus.devices.name": "names the device in logs and `patrol check`",
    "modbus.devices.transport": "`rtu` is a serial port",
    "modbus.devices.host": "tcp and rtu_over_tcp",
    "modbus.devices.port": "tcp and rtu_over_tcp",
    "modbus.devices.serial_port": "rtu: the serial device, e.g. `/dev/ttyUSB0`",
    "modbus.devices.baudrate": "rtu",
    "modbus.devices.parity": "rtu",
    "modbus.devices.stopbits": "rtu",
    "modbus.devices.bytesize": "rtu",
    "modbus.devices.unit_id": "the device's address (0 only over TCP: broadcast on a bus)",
    "modbus.devices.interval": "how often its points are read",
    "modbus.devices.timeout": "for one request",
    "modbus.devices.retries": "of one request before the device counts as silent",
    "modbus.devices.points": "the values read from the device",
    "modbus.devices.points.asset": "an `assets` id",
    "modbus.devices.points.metric": "the reading's name, e.g. `chw_supply_temp`",
    "modbus.devices.points.table": "the Modbus table read",
    "modbus.devices.points.type": "how the registers decode",
    "modbus.devices.points.order": "word and byte order of multi-register types",
    "modbus.devices.points.scale": "value = raw * scale + offset",
    "modbus.devices.points.offset": "value = raw * scale + offset",
    "modbus.devices.points.unit": "stored with the reading, e.g. `degC`",
    # mqtt
    "mqtt": "the MQTT broker and what to read from it (docs/mqtt.md)",
    "mqtt.url": "`mqtt://` or `mqtts://` (TLS) host and port",
    "mqtt.username": "",
    "mqtt.password_env": "environment variable holding the password",
    "mqtt.password_file": "file holding the password",
    "mqtt.protocol": "MQTT version",
    "mqtt.qos": "QoS 1: a message is acknowledged only once stored",
    "mqtt.clean_session": "false keeps the session (and QoS 1 messages) across reconnects",
    "mqtt.keepalive": "",
    "mqtt.ca_file": "TLS: the broker's CA",
    "mqtt.cert_file": "TLS client certificate",
    "mqtt.key_file": "TLS client key",
    "mqtt.subscriptions": "topics and how their payloads map to readings",
    "mqtt.subscriptions.topic": "`{asset}` and `{metric}` each match one level; `+` and `#`",
    "mqtt.subscriptions.format": "`number`: the payload is a bare number",
    "mqtt.subscriptions.asset": "the asset, when the topic does not name it",
    "mqtt.subscriptions.metric": "the metric, when the topic does not name it (`number`)",
    "mqtt.subscriptions.units": "metric -> unit",
    "mqtt.subscriptions.qos": "overrides `mqtt.qos`",
    # influxdb
    "influxdb": "where readings go (docs/tsdb.md); without it they stay in the buffer",
    "influxdb.url": "",
    "influxdb.api": "`v2` (`/api/v2/write`: InfluxDB 1.8+, 2.x, 3.x, VictoriaMetrics) or "
                    "`v1` (`/write`: InfluxDB 1.x)",
    "influxdb.org": "v2",
    "influxdb.token_env": "environment variable holding the token",
    "influxdb.token_file": "file holding the token",
    "influxdb.password_env": "environment variable holding the Basic auth password",
    "influxdb.password_file": "file holding the Basic auth password",
    "influxdb.measurement": "one measurement for every reading",
    "influxdb.batch_size": "readings per write",
    "influxdb.flush_interval": "longest a reading waits for a batch to fill",
    "influxdb.timeout": "for one write",
    # buffer, standards, rules, forward
    "buffer": "the agent's durable store-and-forward file (SQLite)",
    "buffer.path": "",
    "buffer.max_size": "past it the oldest readings are dropped, counted and logged (the "
                       "file's pages; its WAL beside it adds up to 10 MB)",
    "rules": "how often the agent reports compliance and saves rule state",
    "rules.snapshot_every": "compliance snapshot period",
    "rules.save_every": "rule state saved at least this often (and with every event)",
    "rules.save_history_every": "the pairs' recent readings (evidence, window and rate "
                                "histories) saved at least this often, and at a stop",
    "forward": "`patrol agent`: the central API that takes NC events and snapshots",
    "forward.url": "the central API's base URL",
    "forward.token_env": "environment variable holding an `agent` token",
    "forward.token_file": "file holding an `agent` token",
    # server
    "server": "`patrol run` / `patrol api`",
    "server.listen": "host:port",
    "server.database": "`sqlite:///PATH` or `postgresql://user@host/db` (no password here)",
    "server.recurrence_window": "an NC is recurring when the same (asset, standard) had one "
                                "closed this recently",
    # notify (validated; delivery is issue 14's)
    "notify": "alert channels and routes",
    "notify.channels": "where alerts go",
    "notify.channels.name": "routes name it",
    "notify.channels.kind": "`webhook`, `email` or `mqtt`",
    "notify.channels.url": "webhook",
    "notify.channels.smtp": "email: `smtp://` or `smtps://` host and port",
    "notify.channels.from": "email sender",
    "notify.channels.to": "email recipients",
    "notify.channels.topic": "mqtt",
    "notify.channels.secret_env": "environment variable holding the signing secret",
    "notify.channels.secret_file": "file holding the signing secret",
    "notify.routes": "first match wins",
    "notify.routes.match": "NC fields, each a value or a list",
    "notify.routes.channels": "channel names",
    "notify.routes.events": "which NC changes notify (default: all)",
    "notify.routes.remind_every": "remind while not acknowledged",
    "notify.channels.mention": "who a chat message @mentions",
    "notify.channels.mention.mobiles": "phone numbers (DingTalk `atMobiles`, WeCom "
                                       "`mentioned_mobile_list`)",
    "notify.channels.mention.user_ids": "chat user ids (DingTalk `atUserIds`)",
    "notify.channels.mention.all": "@everyone in the group",
    "notify.channels.username": "email: SMTP AUTH user",
    "notify.channels.password_env": "email: environment variable holding the SMTP password",
    "notify.channels.password_file": "email: file holding the SMTP password",
    "notify.channels.qos": "mqtt: 0 or 1",
    "notify.channels.retain": "mqtt: keep the last message on the topic",
    "notify.routes.group_by": "NC fields that make one group (one message per group)",
    "notify.routes.group_wait": "how long a group's first message waits for more",
    "notify.routes.group_interval": "how long a group's later messages wait",
    "notify.routes.escalate_after": "not acknowledged by then: notify `escalate_to`",
    "notify.routes.escalate_to": "channel names that hear of escalations",
    "notify.routes.ack_timeout": "acknowledged but not rectified by then: notify again",
    "notify.routes.mute_time_intervals": "time interval names when this route is muted",
    "notify.routes.active_time_intervals": "time interval names outside which it is muted",
    "notify.routes.mute_bypass": "severities that ignore mutes",
    "notify.time_intervals": "named recurring times (site timezone)",
    "notify.time_intervals.name": "routes name it",
    "notify.time_intervals.times": "`HH:MM-HH:MM` ranges; `22:00-07:00` crosses midnight",
    "notify.time_intervals.weekdays": "`mon`...`sun` or ranges like `mon-fri`",
    "notify.inhibit": "rules that hold back notifications while a source NC is open",
    "notify.inhibit.source": "match of the NC that inhibits",
    "notify.inhibit.target": "match of the NCs it inhibits",
    "notify.inhibit.equal": "fields source and target must share",
    "notify.limits": "never a flood",
    # standards files
    "standards": "globs of standards files, relative to site.yaml",
    "standards.id": "stable across revisions",
    "standards.version": "a revision bumps it; NCs record the version that judged them",
    "standards.title": "",
    "standards.clause": "where the requirement comes from (a manual, a regulation)",
    "standards.category": "what kind of requirement",
    "standards.applies_to": "all given selectors must match",
    "standards.applies_to.assets": "asset ids",
    "standards.applies_to.asset_types": "asset types",
    "standards.applies_to.tags": "asset tags, all equal",
    "standards.metric": "the reading judged (or `expr`)",
    "standards.expr": "an expression over the same asset's metrics, e.g. "
                      "`chw_return_temp - chw_supply_temp` (docs/rules.md: limits)",
    "standards.check": "what compliance means; `kind` selects the fields below",
    "standards.check.kind": "`range` (default), `equals`, `rate`, `stale`, `window`, "
                            "`budget`, `transitions`",
    "standards.check.min": "range, window: lower limit",
    "standards.check.max": "range, window: upper limit; rate: largest change per `per`; "
                           "budget: largest consumption per period; transitions: most "
                           "changes per `per`",
    "standards.check.value": "equals: the compliant value",
    "standards.check.per": "rate, transitions: the time span",
    "standards.check.after": "stale: no good reading this long",
    "standards.check.agg": "window: `mean`, `min`, `max`, `sum`, `delta`, `count`, `p95`",
    "standards.check.over": "window: the sliding window's length",
    "standards.check.period": "budget: `day`, `week` or `month` (site timezone)",
    "standards.check.to": "transitions: the value counted",
    "standards.for": "on-delay: a violation must last this long before an NC",
    "standards.clear_after": "off-delay: back in limits this long to count as recovered",
    "standards.deadband": "recovery needs the value inside the limits by this margin",
    "standards.active": "a schedule, e.g. `Mon-Fri 08:00-18:00` (site timezone)",
    "standards.severity": "how much it matters; routes alerts",
    "standards.department": "overrides the asset's",
    "standards.rectify_within": "due date = detected + this",
    "standards.verify_for": "after a rectification, readings must comply this long to close",
    "standards.on_recovery": "`close` for transient conditions: recovery closes the NC",
    "standards.chattering": "more episodes than `max` within `per` flag the NC as chattering",
    "standards.chattering.max": "",
    "standards.chattering.per": "",
}
"""Meanings the models do not carry themselves. An empty string: the key says it all."""

SECTIONS = (("site.yaml", SiteConfig), ("standards files", StandardsFile))


def _models(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models(arg)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    return found


def _kind(field: FieldInfo, annotation: Any) -> str:
    """A type as people write it in YAML."""
    parsers = {getattr(m, "func", None) for m in field.metadata}
    parsers |= {getattr(m, "func", None) for a in typing.get_args(annotation)
                for m in getattr(a, "__metadata__", ())}
    if parse_duration in parsers:
        return "duration"
    if parse_size in parsers:
        return "size"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _kind(field, args[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [_kind(field, a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(kinds))
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_kind(field, args[0])}"
    if origin is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(
        annotation, str(annotation))


def _default(field: FieldInfo, kind: str) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None or value == [] or value == {} or isinstance(value, BaseModel):
        return ""
    if kind.startswith("duration") and isinstance(value, int | float):
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, meaning) for every key under `model`, depth first."""
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        kind = _kind(field, field.annotation)
        meaning = field.description if field.description is not None else MEANINGS.get(key)
        yield key, kind, _default(field, kind), meaning if meaning is not None else "?"
        for sub in _models(field.annotation):
            yield from rows(sub, key + ".")


def all_rows() -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    for _, model in SECTIONS:
        out += rows(model)
    return out


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated by `python scripts/reference.py` from the config models; "
        "`tests/test_reference_docs.py` fails when it is out of date. How each part behaves: "
        "[modbus](../modbus.md), [mqtt](../mqtt.md), [tsdb](../tsdb.md), "
        "[rules](../rules.md), [api](../api.md), [hand-off](../handoff.md).",
        "",
        "Durations are written `500ms`, `5s`, `10m`, `24h`, `7d`; sizes `100MB`, `1GiB`. "
        "Relative paths are relative to site.yaml. Secrets are never written in the file: "
        "a `*_env` key names an environment variable, a `*_file` key a file holding the secret. "
        "Unknown keys are errors (`patrol check` names file, line and key).",
    ]
    for title, model in SECTIONS:
        lines += ["", f"## {title}", "", "| key | type | default | meaning |",
                  "|---|---|---|---|"]
        seen: set[tuple[str, str]] = set()
        for key, kind, default, meaning in rows(model):
            if (key, kind) in seen:  # check kinds share min, max, per: one row each
                continue
            seen.add((key, kind))
            lines.append(f"| `{key}` | {kind} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def render_cli() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: one width for everyone
    parser = _parser()
    lines = ["# Command line reference", "",
             "Generated by `python scripts/reference.py` from `patrol`'s argument parser. "
             "Exit status: 0 success, 2 invalid config or arguments, 1 any other failure. "
             "`SIGTERM` and `SIGINT` stop `run`, `agent` and `api` cleanly (exit 0).", ""]

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if name != "patrol" and not subs:
            lines.extend([f"## {name}", "", "```", p.format_help().rstrip(), "```", ""])
        for action in subs:
            for child, sub in action.choices.items():
                walk(sub, f"{name} {child}")

    lines.extend(["```", parser.format_help().rstrip(), "```", ""])
    walk(parser, "patrol")
    return "\n".join(lines)


def render_lifecycle() -> str:
    raised = [a for a in AUTOMATIC.values() if NEW in a.sources]
    lines = ["# Nonconformance lifecycle", "",
             "Generated by `python scripts/reference.py` from the tables in "
             "`api/workflow.py`: people's actions, with the roles that may take them, and "
             "the API's own changes (marked by what drives them), all applied by "
             "`api.lifecycle.transition`, which writes the history entry and the feed "
             "event and hands an `NCChanged` record to listeners after the commit. "
             "`assign` changes no state.",
             "", "```mermaid", "stateDiagram-v2",
             *(f"    [*] --> {a.to}: {a.why}" for a in raised)]
    for action in ACTIONS.values():
        roles = "/".join(action.roles)
        for source in action.sources:
            targets = ["closed", "open"] if action.name == "verify" else [action.target(source)]
            for target in targets:
                if target == source:  # assign: drawn as a loop it only clutters
                    continue
                label = action.name
                if action.name == "verify":
                    label += " pass" if target == "closed" else " fail"
                lines.append(f"    {source} --> {target}: {label} ({roles})")
    lines += [f"    {source} --> {action.to}: {action.why}"
              for action in AUTOMATIC.values() if action.to is not None
              for source in action.sources if source is not NEW]
    lines += ["    closed --> [*]", "    cancelled --> [*]", "```", "",
              "| action | from | to | roles | required fields | feed event |",
              "|---|---|---|---|---|---|"]
    for action in ACTIONS.values():
        to = "closed (pass) or open (fail)" if action.name == "verify" else (
            action.to or "unchanged")
        lines.append(f"| {action.name} | {', '.join(action.sources)} | {to} | "
                     f"{', '.join(action.roles)} | {', '.join(action.required) or '-'} | "
                     f"{action.feed} |")
    lines += ["", "The API's own changes (and the tracker's `external_ref`):", "",
              "| change | from | to | in the history as | feed event | when |",
              "|---|---|---|---|---|---|"]
    for action in AUTOMATIC.values():
        sources = ", ".join("(new)" if s is NEW else s for s in action.sources)
        lines.append(f"| {action.name} | {sources} | {action.to or 'unchanged'} | "
                     f"{action.recorded_as} | {action.feed or '- (history only)'} | "
                     f"{action.why} |")
    lines += ["", f"States: {', '.join(STATES)}. `admin` may take every action; `quality` "
              "also takes the engineer's.", ""]
    return "\n".join(lines)


def render_api() -> str:
    import tempfile

    from api.app import create_app
    from api.store import Database

    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{tmp}/reference.sqlite")
        try:
            spec = create_app(database).openapi()
        finally:
            database.close()
    lines = ["# REST API reference", "",
             "Generated by `python scripts/reference.py` from the app's OpenAPI document. "
             "A running server serves the whole schema at `/openapi.json` and browses it at "
             "`/docs`; roles, errors, paging and limits are in [../api.md](../api.md), the "
             "hand-off (feed, webhooks) in [../handoff.md](../handoff.md).", "",
             "| method | path | what | parameters | body |", "|---|---|---|---|---|"]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            params = ", ".join(f"`{p['name']}`" for p in op.get("parameters", [])
                               if p["in"] == "query")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            what = op.get("summary", "")
            lines.append(f"| {method.upper()} | `{path}` | {what} | {params} | "
                         f"{ref.rpartition('/')[2]} |")
    return "\n".join(lines) + "\n"


PAGES = {"configuration.md": render, "cli.md": render_cli, "lifecycle.md": render_lifecycle,
         "api.md": render_api}


def main(argv: list[str]) -> int:
    stale = []
    for name, build in PAGES.items():
        page, text = REFERENCE / name, build()
        if "--check" in argv:
            if not page.exists() or page.read_text() != text:
                stale.append(name)
            continue
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(text)
        print(f"wrote {page.relative_to(ROOT)}")
    if stale:
        print(f"docs/reference/{', '.join(stale)} out of date: run python scripts/reference.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
