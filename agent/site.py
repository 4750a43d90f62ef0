"""The whole site config: site.yaml plus the standards files it names, checked together.

`load_site` collects every problem (schema, cross references, standards) before raising,
so `patrol check` shows them all at once, each as `FILE:LINE: key: message`. Whatever else
loading a file raises (a library's own limit, a bug) is a problem in that file too, never
a traceback: a reload that meets it keeps the standards it has.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.forward import MAX_BACKOFF
from agent.metrics import HealthConfig, MetricsConfig
from agent.tsdb import InfluxConfig
from agent.yamldoc import ConfigError, Loc, Problem, YamlDoc, display_path, load_yaml
from agent.yamldoc import validate as validate_doc
from api.config import ServerConfig
from api.inspections.config import InspectionsConfig
from api.inspections.config import problems as inspection_problems
from api.notify.config import Locale, NotifyConfig
from collector.modbus.config import ModbusConfig
from collector.mqtt.config import MqttConfig
from common.config_types import ByteSize, ConfigPath, Duration
from common.secrets import SecretError, read_secret
from common.vocabulary import ROOT_CAUSE_CATEGORIES
from rules.standard import Asset, Standard, StandardsFile


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KpiTarget(_Strict):
    """One report figure's target (SPEC 7.3): for rates better when higher, green at or
    above `target`, amber down to `amber`, red below; for `*_s` durations and the cancel,
    reopen and recurrence rates (better when lower), the other way round."""

    target: float
    amber: float


class SiteInfo(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = ""
    timezone: str = "UTC"
    locale: Locale = Field("en", description="language of notifications: en or zh-CN")
    root_cause_categories: list[str] = Field(
        default_factory=lambda: list(ROOT_CAUSE_CATEGORIES), min_length=1,
        description="the controlled list a rectification's root_cause_category is one of")
    kpi_targets: dict[str, KpiTarget] = Field(
        default_factory=dict, description="report figures' targets: green at or past "
        "target, amber up to amber, red beyond")

    @field_validator("root_cause_categories")
    @classmethod
    def _unknown_listed(cls, names: list[str]) -> list[str]:
        """`unknown` is what a rectify without a category records: it must be a choice."""
        if len(set(names)) != len(names):
            raise ValueError("a category is listed twice")
        return names if "unknown" in names else [*names, "unknown"]

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # 'Asia' is a directory
            raise ValueError(f"{name!r} is not an IANA time zone like Asia/Shanghai") from None
        return name


class BufferConfig(_Strict):
    path: ConfigPath = Field(Path("data/buffer.sqlite"), validate_default=True)
    max_size: ByteSize = 10**9
    commit_every: Duration = Field(0.5, ge=0, le=10, description=(
        "how long judged readings may wait to be stored together in one transaction "
        "(sources are acknowledged only once stored; sooner when 10 acknowledgements wait); "
        "0: each batch at once"))


class ForwardConfig(_Strict):
    url: str
    token_env: str | None = None
    token_file: ConfigPath | None = None
    max_backoff: Duration = Field(
        MAX_BACKOFF, gt=0, description="longest wait between retries while the API is "
        "unreachable or refusing (0.5 s doubling up to this; Retry-After capped at it)")
    heartbeat: Duration = Field(30.0, ge=1, description="how often the agent tells the "
                                "API it is alive (POST /api/v1/heartbeats)")
    gateway_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\s/]+$",
                                   description="this gateway's name in the fleet (default: "
                                   "the host name)")


class RulesConfig(_Strict):
    """How often the agent reports compliance and saves rule state."""

    snapshot_every: Duration = Field(60.0, ge=1)
    save_every: Duration = Field(30.0, ge=1)
    save_history_every: Duration = Field(600.0, ge=1)


class SiteConfig(_Strict):
    """site.yaml, as SPEC section 3."""

    site: SiteInfo
    assets: list[Asset] = Field(default_factory=list)
    modbus: ModbusConfig | None = None
    mqtt: MqttConfig | None = None
    influxdb: InfluxConfig | None = None
    # defaults are validated too, so their relative paths follow the config file
    buffer: BufferConfig = Field(default_factory=dict, validate_default=True)
    standards: list[str] = Field(default_factory=list, description="globs of standards files")
    rules: RulesConfig = Field(default_factory=RulesConfig)
    forward: ForwardConfig | None = None
    server: ServerConfig = Field(default_factory=dict, validate_default=True)
    notify: NotifyConfig | None = None
    inspections: InspectionsConfig | None = Field(None, description="inspection templates "
                                                  "and schedules (docs/inspections.md)")
    metrics: MetricsConfig | None = Field(None, description="Prometheus metrics of `patrol "
                                          "agent` and `patrol run` (docs/metrics.md)")
    health: HealthConfig = Field(default_factory=HealthConfig, description="when health "
                                 "says degraded (docs/metrics.md)")


@dataclass(frozen=True, slots=True)
class StandardSource:
    """Where a standard is written: its file (relative to site.yaml's folder when inside
    it), its line, and its YAML as written (None when it cannot be cut out alone)."""

    file: str
    line: int
    text: str | None


@dataclass
class Site:
    """A loaded, checked site: its config, its standards, and where they came from."""

    config: SiteConfig
    path: Path
    standards: list[Standard]
    sources: dict[str, StandardSource] = field(default_factory=dict)
    """By standard id: what the site catalog shows people reviewing the standards."""

    @property
    def id(self) -> str:
        return self.config.site.id

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_site(path: Path | str, *, secrets: bool = True) -> Site:
    """Load and check site.yaml and its standards; raise ConfigError listing every problem."""
    path = Path(path).absolute()
    try:
        return _load_site(path, secrets)
    except ConfigError:
        raise
    except Exception as exc:  # a last resort: the file is named, the process goes on
        raise ConfigError([unexpected(path, exc)]) from None


def unexpected(path: Path, exc: Exception) -> Problem:
    """A problem for an exception no check foresaw while loading `path`."""
    text = str(exc)
    text = text if len(text) <= 200 else text[:200] + "..."
    return Problem(display_path(path), 1, "", f"cannot be loaded: {type(exc).__name__}: "
                   f"{text}")


def _load_site(path: Path, secrets: bool) -> Site:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([Problem(doc.name, 1, "", "expected a mapping with a site: section")])
    problems: list[Problem] = []
    try:
        config: SiteConfig | None = validate_doc(SiteConfig, doc,
                                                 context={"base_dir": path.parent})
    except ConfigError as exc:  # still read the standards: report everything at once
        problems += exc.problems
        config = None
    if config is not None:
        problems += _cross_check(config, doc)
        if secrets:
            problems += _secret_problems(config, doc)
        globs, assets = config.standards, {asset.id for asset in config.assets}
    else:
        globs, assets = _raw_standards_globs(doc), None
    sources: dict[str, StandardSource] = {}
    standards, standard_problems = _load_standards(globs, assets, doc, sources)
    problems += standard_problems
    if config is not None and config.inspections is not None:
        problems += [doc.problem(loc, message) for loc, message in inspection_problems(
            config.inspections, notify=config.notify, assets=config.assets,
            standards={standard.id for standard in standards})]
    if problems or config is None:
        raise ConfigError(problems)
    return Site(config, path, standards, sources)


def _raw_standards_globs(doc: YamlDoc) -> list[str]:
    """The `standards:` globs of a site.yaml that failed validation elsewhere."""
    globs = doc.data.get("standards")
    if isinstance(globs, list) and all(isinstance(g, str) for g in globs):
        return globs
    return []


def _cross_check(config: SiteConfig, doc: YamlDoc) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for i, asset in enumerate(config.assets):
        if asset.id in seen:
            problems.append(doc.problem(("assets", i, "id"), f"duplicate asset id {asset.id!r}"))
        seen.add(asset.id)
    if config.modbus:
        series: dict[tuple[str, str], str] = {}  # (asset, metric) -> where it is read first
        for d, device in enumerate(config.modbus.devices):
            for p, point in enumerate(device.points):
                if point.asset not in seen:
                    problems.append(doc.problem(("modbus", "devices", d, "points", p, "asset"),
                                                f"unknown asset {point.asset!r}"))
                where = f"device {device.name!r} point {p} (address {point.address})"
                first = series.setdefault((point.asset, point.metric), where)
                if first != where:
                    problems.append(doc.problem(
                        ("modbus", "devices", d, "points", p, "metric"),
                        f"{point.asset}/{point.metric} is already read by {first}: two "
                        "points would write one series"))
    if config.mqtt:
        for s, sub in enumerate(config.mqtt.subscriptions):
            if sub.asset is not None and sub.asset not in seen:
                problems.append(doc.problem(("mqtt", "subscriptions", s, "asset"),
                                            f"unknown asset {sub.asset!r}"))
    if config.notify:
        problems.extend(_notify_problems(config, doc))
    return problems


def _notify_problems(config: SiteConfig, doc: YamlDoc) -> list[Problem]:
    """What `notify:` needs from the rest of the file, and its templates."""
    from api.notify.render import check_templates

    assert config.notify is not None
    problems = [doc.problem(("notify", "channels", c, "kind"), "an mqtt channel publishes "
                            "through the site's broker: add an mqtt: section")
                for c, channel in enumerate(config.notify.channels)
                if channel.kind == "mqtt" and config.mqtt is None]
    for text in check_templates(config.notify.templates):  # "notify.templates.x.y: why"
        key, _, why = text.partition(": ")
        problems.append(doc.problem(tuple(key.split(".")), why or text))
    return problems


def _secret_problems(config: SiteConfig, doc: YamlDoc) -> list[Problem]:
    """Every `*_env` / `*_file` secret must be readable now, not at the first outage."""
    named: list[tuple[tuple[str | int, ...], str, str | None, Path | None]] = []
    if config.mqtt:
        named.append((("mqtt",), "password", config.mqtt.password_env,
                      config.mqtt.password_file))
    if config.influxdb:
        influx = config.influxdb
        named.append((("influxdb",), "token", influx.token_env, influx.token_file))
        named.append((("influxdb",), "password", influx.password_env, influx.password_file))
    if config.forward:
        named.append((("forward",), "token", config.forward.token_env,
                      config.forward.token_file))
    server = config.server
    named.append((("server",), "database_password", server.database_password_env,
                  server.database_password_file))
    for c, channel in enumerate(config.notify.channels if config.notify else ()):
        where = ("notify", "channels", c)
        named.append((where, "url", channel.url_env, _path(channel.url_file)))
        named.append((where, "secret", channel.secret_env, _path(channel.secret_file)))
        named.append((where, "password", channel.password_env, _path(channel.password_file)))
    problems = []
    for loc, key, env, file in named:
        try:
            read_secret(env, file)
        except SecretError as exc:
            suffix = "_env" if env else "_file"
            problems.append(doc.problem((*loc, key + suffix), str(exc)))
        except ValueError as exc:  # a NUL in the path, a file that is not UTF-8
            suffix = "_env" if env else "_file"
            problems.append(doc.problem((*loc, key + suffix),
                                        f"cannot read secret file {str(file)!r}: {exc}"))
    return problems


def _relative(path: Path, base: Path) -> str:
    """`standards/plant.yaml` for a file under site.yaml's folder; else the whole path."""
    try:
        return path.absolute().relative_to(base.absolute()).as_posix()
    except ValueError:
        return str(path)


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def _load_standards(globs: list[str], assets: set[str] | None, doc: YamlDoc,
                    sources: dict[str, StandardSource]) -> tuple[list[Standard], list[Problem]]:
    """Standards from every file the globs match; `assets` None: asset ids unknown. Where
    each is written goes into `sources`."""
    problems: list[Problem] = []
    standards: list[Standard] = []
    first_seen: dict[str, str] = {}
    for g, pattern in enumerate(globs):
        full = str(doc.path.parent / pattern)
        files = sorted(glob.glob(full, recursive=True))
        if not files:
            problems.append(doc.problem(("standards", g), f"{pattern!r} matches no file"))
        for file in files:
            try:
                sdoc = load_yaml(Path(file))
                if not isinstance(sdoc.data, dict):
                    raise ConfigError([Problem(sdoc.name, 1, "", "expected standards: [...]")])
                loaded: StandardsFile = validate_doc(StandardsFile, sdoc)
            except ConfigError as exc:
                problems += exc.problems
                continue
            except Exception as exc:  # a last resort, naming this file
                problems.append(unexpected(Path(file), exc))
                continue
            for i, standard in enumerate(loaded.standards):
                loc: Loc = ("standards", i)
                where = f"{sdoc.name}:{sdoc.line_of(loc)}"
                if standard.id in first_seen:
                    first = first_seen[standard.id]
                    problems.append(sdoc.problem(
                        (*loc, "id"), f"duplicate standard id {standard.id!r} (first at {first})"))
                    continue
                first_seen[standard.id] = where
                for a, asset in enumerate(standard.applies_to.assets):
                    if assets is not None and asset not in assets:
                        problems.append(sdoc.problem((*loc, "applies_to", "assets", a),
                                                     f"unknown asset {asset!r}"))
                standards.append(standard)
                sources[standard.id] = StandardSource(
                    _relative(Path(file), doc.path.parent), sdoc.line_of(loc),
                    sdoc.text_of(loc))
    return standards, problems


__all__ = ["ConfigError", "Site", "SiteConfig", "StandardSource", "display_path", "load_site"]
