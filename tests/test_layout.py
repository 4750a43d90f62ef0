"""The edge agent stays small: it must not pull in the API's stack."""

from __future__ import annotations

import subprocess
import sys


def test_patrol_agent_imports_neither_fastapi_nor_sqlalchemy_nor_uvicorn() -> None:
    code = (
        "import sys, agent.cli, agent.runtime, agent.config, collector.mqtt, "
        "collector.modbus.poller, rules.engine\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'sqlalchemy', 'uvicorn', 'starlette'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
