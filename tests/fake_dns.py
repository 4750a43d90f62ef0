"""A DNS answer chosen by the test: what a name resolves to at connect time (the
rebinding cases cannot be staged with real DNS)."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult


class FixedAnswers(AbstractResolver):
    """Resolves every name to `hosts`, in order."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=h, port=port, family=family, proto=0,
                              flags=0) for h in self.hosts]

    async def close(self) -> None:
        pass
