"""The fleet heartbeat with real processes on PostgreSQL (SPEC 7.5): `patrol agent` posts
heartbeats to `patrol api`; killed, its silence raises the gateway-offline NC; started
again, its first heartbeat closes it. The NC goes through the one lifecycle: the feed
shows it raised and closed."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.integration.conftest import Api, ModbusServerThread, PatrolProcess
from tests.integration.test_handoff import SUPPLY, agent_site, central_site, tokens, whole_feed


def test_heartbeats_stopped_raise_the_gateway_offline_nc_and_their_return_closes_it(
        tmp_path: Path, pg_url: str) -> None:
    modbus = ModbusServerThread().start()
    modbus.set(SUPPLY, 7.0)  # compliant: the only NC is the gateway's
    api_port = free_port()
    central = central_site(tmp_path / "central", api_port, pg_url, gateway_offline_after="3s")
    agent_token, reader = tokens(pg_url, "agent", "tracker")
    site = agent_site(tmp_path / "edge", "tower-a", modbus.port, 1, api_port, "AGENT_TOKEN")
    site.write_text(site.read_text().replace(
        "token_env: AGENT_TOKEN}", "token_env: AGENT_TOKEN, heartbeat: 1s, gateway_id: pi-7}"))
    client = Api(f"http://127.0.0.1:{api_port}/api/v1", reader)
    api = PatrolProcess("api", "-c", central, cwd=central.parent)
    agent = None
    try:
        api.wait_for_output("Patrol API on")
        agent = PatrolProcess("agent", "-c", site, cwd=site.parent,
                              env={"AGENT_TOKEN": agent_token})

        def reading(body: dict[str, Any]) -> bool:
            items = body["items"]
            return bool(items) and items[0]["sources"].get("modbus:plc", {}).get(
                "readings", 0) > 0 and items[0]["clock_offset"] is not None

        gateway = client.wait_for("/gateways", reading, timeout=30)["items"][0]
        assert (gateway["site_id"], gateway["gateway_id"], gateway["status"]) == (
            "tower-a", "pi-7", "online")
        assert abs(gateway["clock_offset"]) < 1.0  # the same machine's clock
        assert gateway["buffer"]["bytes"] > 0 and gateway["version"]

        assert agent.stop(signal.SIGKILL) == -signal.SIGKILL  # silent from now on
        offline = client.wait_for(
            "/gateways", lambda b: b["items"][0]["offline_nc"] is not None, timeout=20)
        nc_id = offline["items"][0]["offline_nc"]
        assert offline["items"][0]["status"] == "offline"
        nc = client.get(f"/nonconformances/{nc_id}")[1]
        assert (nc["asset_id"], nc["standard_id"], nc["state"]) == (
            "gateway:pi-7", "PATROL-GATEWAY-OFFLINE", "open")

        agent = PatrolProcess("agent", "-c", site, cwd=site.parent,
                              env={"AGENT_TOKEN": agent_token})
        client.wait_for(f"/nonconformances/{nc_id}", lambda b: b["state"] == "closed",
                        timeout=20)
        back = client.wait_for("/gateways", lambda b: b["items"][0]["status"] == "online")
        assert back["items"][0]["offline_nc"] is None
        assert "closed NC-" in agent.wait_for_output("(gateway offline) on this heartbeat")
        states = [e["nc"]["state"] for e in whole_feed(client.base, reader)
                  if e["nc"]["id"] == nc_id]
        assert states == ["open", "closed"]
        assert [n["id"] for n in client.get("/nonconformances")[1]["items"]] == [nc_id]
    finally:
        if agent is not None:
            agent.stop()
        api.stop()
        modbus.stop()
