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


LIFECYCLE_FIELDS = {"state", "open_slot", "closed_at"}


def test_only_the_lifecycle_sets_an_nc_state() -> None:
    """Every NC change goes through api/lifecycle.py's `transition`, which keeps the state,
    the open slot, `closed_at`, the history, the feed and the change records together:
    no other module of api/ assigns those fields (`nc.state = ...`, `nc.closed_at += ...`,
    `Nonconformance(state=...)`) or writes a history or feed row itself."""
    import ast
    from pathlib import Path

    root = Path(__file__).parent.parent / "api"
    offenders = []
    for module in sorted(root.rglob("*.py")):
        name = module.relative_to(root).as_posix()
        if name == "lifecycle.py" or name.startswith("migrations/"):
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            while targets:
                target = targets.pop()
                if isinstance(target, ast.Tuple | ast.List):
                    targets += target.elts
                elif isinstance(target, ast.Attribute) and target.attr in LIFECYCLE_FIELDS:
                    offenders.append(f"{name}:{target.lineno}: assigns .{target.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "Nonconformance":
                    offenders += [f"{name}:{node.lineno}: Nonconformance({k.arg}=...)"
                                  for k in node.keywords if k.arg in LIFECYCLE_FIELDS]
                if node.func.id in ("HistoryEntry", "FeedEvent"):
                    offenders.append(f"{name}:{node.lineno}: writes a {node.func.id}")
    assert offenders == []
