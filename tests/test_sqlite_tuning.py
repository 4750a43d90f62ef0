"""SQLite's memory statistics are off in a process that imports api.store before it opens a
database, and left alone in one that opened a database first (common.sqlite_tuning). Each
case runs in a fresh interpreter: the switch is once per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEMORY_USED = """
import ctypes, _sqlite3
_library = ctypes.CDLL(_sqlite3.__file__)
_library.sqlite3_memory_used.restype = ctypes.c_int64
def memory_used():
    return _library.sqlite3_memory_used()
"""


def _run(body: str, tmp_path: Path) -> dict[str, object]:
    script = MEMORY_USED + body
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(ROOT),
                                                      "TMP": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_store_turns_the_statistics_off(tmp_path: Path) -> None:
    """With statistics off SQLite counts nothing: an open database with a table and rows
    shows 0 bytes in use (on, it shows its page cache); the store still works."""
    found = _run("""
import json, os
from api.store import Database
from common import sqlite_tuning
db = Database(f"sqlite:///{os.environ['TMP']}/p.db")
with db.session() as session:
    from sqlalchemy import text
    rows = session.execute(text("SELECT count(*) FROM nonconformances")).scalar()
print(json.dumps({"off": sqlite_tuning.without_memory_statistics(), "used": memory_used(),
                  "rows": rows}))
""", tmp_path)
    assert found == {"off": True, "used": 0, "rows": 0}


def test_a_database_opened_first_leaves_them_on(tmp_path: Path) -> None:
    """SQLite cannot be shut down under an open connection: the switch does nothing, and
    that connection goes on working."""
    found = _run("""
import json, os, sqlite3
first = sqlite3.connect(os.path.join(os.environ["TMP"], "first.db"))
first.execute("CREATE TABLE t (x)")
from common import sqlite_tuning
import api.store
first.execute("INSERT INTO t VALUES (1)")
print(json.dumps({"off": sqlite_tuning.without_memory_statistics(),
                  "counted": memory_used() > 0,
                  "rows": first.execute("SELECT count(*) FROM t").fetchone()[0]}))
""", tmp_path)
    assert found == {"off": False, "counted": True, "rows": 1}
