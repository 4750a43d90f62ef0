"""`patrol demo` as a new user runs it: it prints a URL and a token, the printed curl line
shows the chiller NC within 60 s, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.conftest import Api, PatrolProcess


@pytest.mark.parametrize("broker", ["machine", "embedded"])
def test_demo_raises_the_chiller_nc_and_stops_on_ctrl_c(tmp_path: Path, broker: str) -> None:
    """With the machine's Mosquitto, and with no broker at all (the embedded one starts)."""
    port = free_port()
    where = "127.0.0.1:1883" if broker == "machine" else f"127.0.0.1:{free_port()}"
    process = PatrolProcess("demo", "--dir", tmp_path / "demo", "--port", port,
                            "--broker", where, cwd=tmp_path)
    try:
        output = process.wait_for_output("try:", timeout=30)
        curl = re.search(r"curl -s -H 'Authorization: Bearer (\S+)' (\S+)/nonconformances",
                         output)
        assert curl, output
        token, base = curl.groups()
        assert base == f"http://127.0.0.1:{port}/api/v1"
        body = Api(base, token).wait_for(
            "/nonconformances?asset_id=CH-1",
            lambda b: any(nc["standard_id"] == "HVAC-CHW-SUPPLY" for nc in b["items"]),
            timeout=60)
        nc = body["items"][0]
        assert nc["state"] == "open" and nc["evidence"]["value"] > 8.0
        assert nc["evidence"]["readings"], nc
        console = re.search(r"console: (\S+)/ +sign in as demo-engineer, demo-quality, "
                            r"password (\S+)", output)
        assert console, output
        with httpx.Client(base_url=console.group(1), follow_redirects=True) as browser:
            form = browser.get("/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf, form
            signed = browser.post("/login", data={
                "name": "demo-engineer", "password": console.group(2),
                "csrf": csrf.group(1)})  # followed to the NC list
            assert signed.status_code == 200 and nc["id"] in signed.text
        alert = process.wait_for_output(nc["id"], timeout=60)  # the alert, in the terminal
        assert "--- ALERT (notify channel demo-alerts)" in alert
    finally:
        code = process.stop(signal.SIGINT)
    assert code == 0, process.output
    assert "Traceback" not in process.output
    assert ("started an embedded one" in process.output) == (broker == "embedded")
