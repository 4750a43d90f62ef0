"""`patrol agent` loads only what its site needs: never the API's stack, urllib3 only with
an `influxdb:` section, never influxdb-client (a write is one POST). Each module costs the
gateway resident memory (influxdb-client with the numpy it loads is about 24 MB), so this
is checked on an agent that has really started: collectors, pipeline, forwarder, stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

API_ONLY = ("fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "jinja2", "openpyxl",
            "xlsxwriter", "aiohttp", "httpx", "psycopg")
TSDB_ONLY = ("influxdb_client", "numpy", "urllib3")

RUN = """
import asyncio, json, sys
import agent.cli  # the command line `patrol agent` goes through
from agent.runtime import run_site
from agent.site import load_site

site = load_site(sys.argv[1])

async def main() -> None:
    stop = asyncio.Event()
    await run_site(site, mode="agent", stop=stop, on_ready=lambda url: stop.set())

asyncio.run(main())
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def site_yaml(directory: Path, influxdb: str) -> Path:
    dead = free_port()  # nothing answers: the agent starts all the same
    (directory / "standards.yaml").write_text(
        "standards:\n  - {id: T, version: 1, title: T, metric: t, check: {max: 30}, "
        "severity: minor, rectify_within: 1d}\n")
    path = directory / "site.yaml"
    path.write_text(f"""\
site: {{id: imports}}
assets: [{{id: a1, type: room}}]
mqtt:
  url: mqtt://127.0.0.1:{dead}
  subscriptions: [{{topic: "s/{{asset}}/{{metric}}", format: number}}]
modbus:
  devices:
    - {{name: d1, host: 127.0.0.1, port: {dead}, timeout: 0.2s, retries: 0,
       points: [{{asset: a1, metric: t, address: 0, type: int16}}]}}
standards: [standards.yaml]
buffer: {{path: data/buffer.sqlite}}
forward: {{url: "http://127.0.0.1:{dead}"}}
{influxdb}""")
    return path


@pytest.mark.parametrize(("influxdb", "tsdb"), [
    ("", ()),
    ("influxdb: {url: 'http://127.0.0.1:1', api: v1, bucket: b}\n", ("urllib3",)),
    ("influxdb: {url: 'http://127.0.0.1:1', api: v2, bucket: b}\n", ("urllib3",)),
], ids=["no-tsdb", "influxdb-v1", "influxdb-v2"])
def test_a_started_agent_has_loaded_only_what_its_site_needs(
        tmp_path: Path, influxdb: str, tsdb: tuple[str, ...]) -> None:
    result = subprocess.run([sys.executable, "-c", RUN, str(site_yaml(tmp_path, influxdb))],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert {"paho", "pymodbus", "pydantic"} <= loaded  # it did start its collectors
    assert sorted(loaded & set(API_ONLY)) == []
    assert sorted(loaded & set(TSDB_ONLY)) == sorted(tsdb)
