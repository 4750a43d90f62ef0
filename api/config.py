"""site.yaml `server:` section (`patrol run` / `patrol api`). pydantic only: no FastAPI here."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from common.config_types import ConfigPath, Duration
from common.secrets import read_secret

DEFAULT_DATABASE = "sqlite:///data/patrol.sqlite"


def _cidr(network: str) -> str:
    try:
        ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise ValueError(f"{network!r} is not an address or CIDR like 10.20.0.0/16") from None
    return network


Cidr = Annotated[str, AfterValidator(_cidr)]


def _has_password(url: str) -> bool:
    """Whether a database URL carries a password (`user:secret@host`)."""
    try:
        return urlsplit(url).password is not None
    except ValueError:  # a malformed netloc: the engine will say so
        return False


class RetentionConfig(BaseModel):
    """How long the API keeps what only serves delivery (SPEC 7.5): the NC history, the
    reports' figures and the NCs themselves are never pruned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feed: Duration | None = Field(180 * 86400.0, gt=0, description="feed events (a tracker "
                                  "polling GET /feed from a cursor older than this misses "
                                  "them); null: keep all")
    deliveries: Duration | None = Field(30 * 86400.0, gt=0, description="webhook "
                                        "deliveries delivered or given up; null: keep all")
    notifications: Duration | None = Field(90 * 86400.0, gt=0, description="settled "
                                           "notifications and their messages; null: keep "
                                           "all")


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "127.0.0.1:8080"
    database: str = Field(DEFAULT_DATABASE, validate_default=True)
    database_password_env: str | None = Field(None, description="PostgreSQL password from "
                                              "this environment variable")
    database_password_file: ConfigPath | None = Field(None, description="PostgreSQL "
                                                      "password from this file")
    allow_self_verify: bool = Field(False, description="let the rectifier verify their own fix")
    recurrence_window: Duration = Field(90 * 86400.0, gt=0)
    webhooks_allow_private: bool = Field(False, description="let webhooks created through "
                                         "the API reach every address webhooks_allow could")
    webhooks_allow: list[Cidr] = Field(default_factory=list, description=(
        "CIDRs of loopback, private, link-local, CGNAT or NAT64 addresses webhooks created "
        "through the API may reach"))
    max_clock_skew: Duration = Field(300.0, ge=0, description="how far ahead of the "
                                     "server's clock an event may be dated (422 beyond)")
    public_url: str | None = Field(None, description="the address people reach this "
                                   "server at (links in alerts), like https://patrol.example")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description=(
        "how long feed events, webhook deliveries and notifications are kept (the NC "
        "history always)"))
    gateway_offline_after: Duration = Field(300.0, gt=0, description="a gateway (edge "
                                            "agent) silent this long raises the "
                                            "gateway-offline NC")

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{listen!r} is not host:port, like 127.0.0.1:8080")
        return listen

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL")
        return url.rstrip("/") if url else url

    @field_validator("database")
    @classmethod
    def _database(cls, url: str, info: ValidationInfo) -> str:
        """Relative SQLite paths are relative to the config file, like every path."""
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            rest = url.removeprefix("sqlite:///")
            base = (info.context or {}).get("base_dir")
            if rest and rest != ":memory:" and base is not None:
                return f"sqlite:///{(Path(base) / rest).resolve()}"
        elif not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError(f"{url!r}: database must be sqlite:///PATH or postgresql://...")
        elif _has_password(url):
            raise ValueError("a password is never written in site.yaml: remove it from the "
                             "URL and use server.database_password_env (an environment "
                             "variable) or server.database_password_file (a file holding it)")
        return url

    @model_validator(mode="after")
    def _password_for_postgresql(self) -> ServerConfig:
        if (self.database_password_env or self.database_password_file) \
                and not self.database.startswith("postgresql"):
            raise ValueError("database_password_env / database_password_file are for a "
                             "postgresql:// database")
        return self

    def database_password(self) -> str | None:
        """The PostgreSQL password, read now; SecretError names what could not be read."""
        return read_secret(self.database_password_env, self.database_password_file)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])
