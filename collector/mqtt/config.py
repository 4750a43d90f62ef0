"""site.yaml `mqtt:` section: the broker, the session and the subscriptions.

Checked whole at load (topic levels, JSON paths, repeated topics), so a subscription that
cannot work never reaches the broker."""

from __future__ import annotations

import re
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collector.errors import SettingError
from collector.mqtt.jsonpath import JsonPath
from common.config_types import ConfigPath, Duration

_PLACEHOLDER = re.compile(r"\{(asset|metric)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Subscription(_Strict):
    """A topic pattern and how its payloads map to metrics.

    `{asset}` and `{metric}` each match one topic level. Without `{asset}` in the topic,
    `asset` names it; a `number` payload without `{metric}` needs `metric`. Readings of an
    asset that site.yaml does not list are refused unless `accept_unknown_assets`.
    """

    topic: str
    format: Literal["json", "number"] = "json"
    metrics: dict[str, str] = Field(default_factory=dict, description="metric -> $.path")
    asset: str | None = None
    metric: str | None = None
    timestamp: str | None = Field(None, description="$.path to epoch s/ms or ISO 8601")
    units: dict[str, str] = Field(default_factory=dict)
    qos: Literal[0, 1] | None = None
    accept_unknown_assets: bool = Field(
        False, description="keep readings of assets that are not in site.yaml's assets "
        "(refused and counted otherwise)")

    @field_validator("topic")
    @classmethod
    def _topic(cls, topic: str) -> str:
        levels = topic.split("/")
        for i, level in enumerate(levels):
            if level == "#" and i != len(levels) - 1:
                raise SettingError("'#' is allowed only as the last topic level")
            if level not in ("+", "#") and ("+" in level or "#" in level):
                raise SettingError(f"wildcard must fill a whole topic level, not {level!r}")
            if _PLACEHOLDER.search(level) and not _PLACEHOLDER.fullmatch(level):
                raise SettingError(f"{{asset}}/{{metric}} must fill a whole level, not {level!r}")
        return topic

    @field_validator("metrics")
    @classmethod
    def _paths(cls, metrics: dict[str, str]) -> dict[str, str]:
        for metric, path in metrics.items():
            try:
                JsonPath.compile(path)
            except ValueError as exc:
                raise SettingError(f"{metric}: {exc}") from None
        return metrics

    @field_validator("timestamp")
    @classmethod
    def _timestamp_path(cls, path: str | None) -> str | None:
        if path is not None:
            JsonPath.compile(path)
        return path

    @model_validator(mode="after")
    def _mapping(self) -> Self:
        has_asset = "{asset}" in self.topic
        has_metric = "{metric}" in self.topic
        if not has_asset and not self.asset:
            raise SettingError(f"topic {self.topic!r} has no {{asset}}: set asset")
        if self.format == "number" and not has_metric and not self.metric:
            raise SettingError("a number payload needs {metric} in the topic or metric")
        if self.format == "number" and (self.metrics or self.timestamp):
            raise SettingError("a number payload has no metrics or timestamp paths")
        if self.format == "json" and not self.metrics and not has_metric and not self.metric:
            raise SettingError("a json subscription needs metrics (metric -> $.path)")
        return self


class MqttConfig(_Strict):
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password_env: str | None = None
    password_file: ConfigPath | None = None
    client_id: str | None = Field(None, description="fixed id: needed for a persistent session")
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    qos: Literal[0, 1] = 1
    clean_session: bool = False
    keepalive: Duration = Field(60.0, gt=0)
    ca_file: ConfigPath | None = None
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    max_payload: int = Field(256 * 1024, gt=0, description="bytes; larger payloads are refused")
    subscriptions: list[Subscription] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_topics(self) -> Self:
        seen: set[str] = set()
        for sub in self.subscriptions:
            if sub.topic in seen:
                raise SettingError(f"subscription {sub.topic!r} appears twice: merge its metrics")
            seen.add(sub.topic)
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise SettingError(f"{url!r} is not an MQTT URL like mqtt://host:1883 or mqtts://host")
        return url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)
