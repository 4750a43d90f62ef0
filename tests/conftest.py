"""Shared fixtures: free ports, and the real services the suite talks to."""

from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()
