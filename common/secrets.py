"""Secrets named by `*_env` / `*_file` keys: never in site.yaml, never in logs."""

from __future__ import annotations

import os
from pathlib import Path


class SecretError(ValueError):
    """A named secret cannot be read; the message names the variable or file, not the value."""


def read_secret(env: str | None, file: Path | None) -> str | None:
    """The secret from the environment variable or the file (first line, stripped)."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise SecretError(f"environment variable {env} is not set")
        return value
    if file:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {file}: {exc.strerror or exc}") from exc
    return None
