"""Where webhooks created through the API may connect (SPEC 7.1 `server.webhooks_allow`):
not this machine, private, link-local, CGNAT or NAT64-mapped addresses unless listed;
checked when the webhook is created and again at every connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.site import load_site
from agent.yamldoc import ConfigError
from api.app import create_app
from api.store import Database
from api.webhooks import SafeResolver, parse_allow
from tests.fake_dns import FixedAnswers
from tests.integration.webhook_receiver import (  # noqa: F401 (fixtures)
    WebhookReceiver,
    receiver_fixture,
)
from tests.test_feed_webhooks import Patrol, eventually

# (address, its class in the refusal, a CIDR that allows it)
REFUSED = [
    ("127.0.0.1", "loopback", "127.0.0.0/8"), ("127.8.9.10", "loopback", "127.8.0.0/16"),
    ("::1", "loopback", "::1/128"), ("0.0.0.0", "this-host", "0.0.0.0/32"),
    ("10.1.2.3", "private", "10.0.0.0/8"), ("172.20.0.9", "private", "172.16.0.0/12"),
    ("192.168.1.20", "private", "192.168.1.0/24"), ("fd12:3456::1", "private", "fc00::/7"),
    ("::ffff:192.168.1.20", "private", "192.168.0.0/16"),
    ("169.254.10.1", "link-local", "169.254.0.0/16"), ("fe80::1", "link-local", "fe80::/10"),
    ("100.64.0.1", "CGNAT", "100.64.0.0/10"), ("100.127.255.254", "CGNAT", "100.64.0.0/10"),
    ("64:ff9b::c0a8:114", "NAT64-mapped", "64:ff9b::/96"),
    ("64:ff9b::808:808", "NAT64-mapped", "64:ff9b::/96"),
    ("169.254.169.254", "metadata", "169.254.169.254/32"),
]
PUBLIC = ["203.0.113.7", "8.8.8.8", "2001:db8::1", "100.128.0.1", "172.32.0.1"]


def url_of(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:8080/hook"


@pytest.fixture
def make_patrol(db: Database) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**options: Any) -> Patrol:
        client = TestClient(create_app(db, **options))
        clients.append(client.__enter__())
        return Patrol(client, db)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def create(patrol: Patrol, url: str) -> Any:
    return patrol.client.post("/api/v1/webhooks", json={"url": url},
                              headers=patrol.headers("admin"))


@pytest.mark.parametrize(("address", "kind", "cidr"), REFUSED)
def test_a_webhook_to_a_refused_address_is_422_unless_allowed(
        make_patrol: Any, address: str, kind: str, cidr: str) -> None:
    refused = create(make_patrol(), url_of(address))
    assert refused.status_code == 422, refused.text
    assert kind in refused.json()["detail"] and "webhooks_allow" in refused.json()["detail"]
    assert create(make_patrol(webhooks_allow=[cidr]), url_of(address)).status_code == 201
    assert create(make_patrol(webhooks_allow_private=True),
                  url_of(address)).status_code == 201


@pytest.mark.parametrize("address", PUBLIC)
def test_a_webhook_to_a_public_address_needs_no_allowance(make_patrol: Any,
                                                          address: str) -> None:
    response = create(make_patrol(), url_of(address))
    assert response.status_code == 201, response.text


def test_an_allowance_allows_only_its_own_network(make_patrol: Any) -> None:
    patrol = make_patrol(webhooks_allow=["10.20.0.0/16", "fd00:1::/32"])
    assert create(patrol, "http://10.20.3.4/").status_code == 201
    assert create(patrol, "http://[fd00:1::9]/").status_code == 201
    for other in ("10.21.0.1", "192.168.0.1", "127.0.0.1", "fd00:2::9", "100.64.0.1"):
        assert create(patrol, url_of(other)).status_code == 422, other


def test_a_name_that_resolves_to_loopback_is_refused(make_patrol: Any) -> None:
    response = create(make_patrol(), "http://localhost:8080/hook")
    assert response.status_code == 422
    assert "loopback" in response.json()["detail"]


def resolved(resolver: SafeResolver) -> list[str]:
    async def run() -> list[str]:
        return [answer["host"] for answer in await resolver.resolve("hooks.example", 443)]

    return asyncio.run(run())


@pytest.mark.parametrize(("address", "kind", "cidr"), REFUSED)
def test_at_connect_time_a_refused_address_is_never_used_unless_allowed(
        address: str, kind: str, cidr: str) -> None:
    with pytest.raises(OSError, match=kind):
        resolved(SafeResolver(FixedAnswers(address)))
    assert resolved(SafeResolver(FixedAnswers(address, "203.0.113.7"))) == ["203.0.113.7"]
    assert resolved(SafeResolver(FixedAnswers(address), allow=parse_allow([cidr]))) == [address]


def test_a_delivery_to_a_refused_address_is_refused_with_its_reason_recorded(
        db: Database, make_patrol: Any, receiver: WebhookReceiver) -> None:
    """A webhook made while loopback was allowed (or written to the table by hand) is not
    delivered once the allowance is gone: the delivery records why."""
    hook = make_patrol(webhooks_allow=["127.0.0.0/8"]).hook_to(receiver)
    with TestClient(create_app(db, jobs=True)) as client:
        patrol = Patrol(client, db)
        patrol.raise_nc()
        delivery = eventually(lambda: next((d for d in patrol.deliveries(hook)
                                            if d["last_error"]), None), what="an attempt")
    assert delivery["status"] == "pending" and delivery["last_status"] is None
    assert "127.0.0.1, a loopback address" in delivery["last_error"]
    assert receiver.received == []
    with TestClient(create_app(db, jobs=True, webhooks_allow=["127.0.0.1/32"])) as client:
        patrol = Patrol(client, db)
        patrol.retry_now(delivery["id"])
        receiver.wait_until(lambda r: len(r) == 1, what="the delivery once allowed")


def test_webhooks_allow_in_site_yaml_must_be_cidrs(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: plant}\nserver:\n  webhooks_allow:\n    - 10.0.0.0/8\n"
                    "    - not-a-network\n")
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    [problem] = caught.value.problems
    assert problem.line == 5 and "not-a-network" in problem.message
    site.write_text("site: {id: plant}\nserver: {webhooks_allow: [10.0.0.0/8, 'fd00::/8']}\n")
    assert load_site(site).config.server.webhooks_allow == ["10.0.0.0/8", "fd00::/8"]
