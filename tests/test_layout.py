"""The edge agent stays small: it must not pull in the API's stack."""

from __future__ import annotations

import subprocess
import sys


def test_patrol_agent_imports_neither_fastapi_nor_sqlalchemy_nor_uvicorn() -> None:
    code = (
        "import sys, agent.cli, agent.runtime, agent.site, collector.mqtt.client, "
        "collector.modbus.poller, rules.engine\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'sqlalchemy', 'uvicorn', 'starlette'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_routers_hold_no_sql() -> None:
    """Queries live in the service layer (api/service.py and the modules beside it), where
    they can be bounded and tested apart from HTTP; a router only calls them."""
    import ast
    from pathlib import Path

    offenders = []
    for module in sorted((Path(__file__).parent.parent / "api" / "routes").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{module.name}: {name}" for name in names
                          if name.split(".")[0] == "sqlalchemy"]
    assert offenders == []


def test_common_imports_nothing_of_patrol() -> None:
    """common/ is the bottom layer: every package may import it, it imports none of them."""
    import ast
    from pathlib import Path

    ours = {"agent", "api", "collector", "rules"}
    offenders = []
    for module in sorted((Path(__file__).parent.parent / "common").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{module.name}: {name}" for name in names
                          if name.split(".")[0] in ours]
    assert offenders == []
