"""`patrol backup` beside a running `patrol run`, and `patrol restore` after its data
folder was lost: the same NC with its history, the rule state with it (the violation
going on is not raised again), and a restore that refuses to overwrite or to replace a
file in use."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port
from tests.integration.conftest import Api, ModbusServerThread, PatrolProcess, write_site_folder
from tests.integration.test_handoff import SUPPLY, tokens
from tests.integration.test_status import STANDARDS, plc_run_site


def patrol(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_a_backup_taken_while_running_restores_the_ncs_and_the_rule_state(
        tmp_path: Path) -> None:
    modbus = ModbusServerThread().start()
    modbus.set(SUPPLY, 9.5)
    port = free_port()
    site = plc_run_site(tmp_path, modbus.port, port, "rules: {save_every: 1s}\n")
    saved = tmp_path / "backups" / "monday"
    run = PatrolProcess("run", "-c", site, cwd=tmp_path)
    try:
        run.wait_for_output("patrol run started")
        reader = tokens(f"sqlite:///{tmp_path / 'data' / 'patrol.sqlite'}", "tracker")[0]
        api = Api(f"http://127.0.0.1:{port}/api/v1", reader)
        nc = api.wait_for("/nonconformances", lambda b: len(b["items"]) == 1)["items"][0]
        time.sleep(1.5)  # the rule state saved (save_every: 1s) with the episode in it

        done = patrol("backup", "-c", site, "--to", saved)
        assert done.returncode == 0, done.stderr
        assert "buffer.sqlite:" in done.stdout and "patrol.sqlite:" in done.stdout
        assert {p.name for p in saved.iterdir()} == {"buffer.sqlite", "patrol.sqlite",
                                                    "backup.json"}
        again = patrol("backup", "-c", site, "--to", saved)
        assert again.returncode == 1 and "not empty" in again.stderr

        refused = patrol("restore", "-c", site, "--from", saved)
        assert refused.returncode == 1 and "exists" in refused.stderr
        in_use = patrol("restore", "-c", site, "--from", saved, "--force")
        assert in_use.returncode == 1 and "is open in process" in in_use.stderr
    finally:
        assert run.stop() == 0, run.output

    shutil.rmtree(tmp_path / "data")  # the SD card died
    done = patrol("restore", "-c", site, "--from", saved)
    assert done.returncode == 0, done.stderr
    run = PatrolProcess("run", "-c", site, cwd=tmp_path)
    try:
        run.wait_for_output("rule state restored")
        api = Api(f"http://127.0.0.1:{port}/api/v1", reader)  # the token came back too
        back = api.wait_for(f"/nonconformances/{nc['id']}", lambda b: True)
        assert back["detected_at"] == nc["detected_at"]
        history = api.get(f"/nonconformances/{nc['id']}/history")[1]["items"]
        assert history[0]["action"] == "raised"
        time.sleep(2)  # readings keep violating: the same episode, not a new NC
        items = api.get("/nonconformances")[1]["items"]
        assert [(i["id"], i["occurrences"]) for i in items] == [(nc["id"], 1)]
    finally:
        assert run.stop() == 0, run.output
        modbus.stop()


def test_a_damaged_backup_is_refused_before_anything_changes(tmp_path: Path) -> None:
    site = write_site_folder(tmp_path, standards=STANDARDS,
                             site="site: {id: tower-a}\n", api_port=free_port())
    (tmp_path / "data").mkdir()
    for name in ("buffer.sqlite", "patrol.sqlite"):
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / name)) as db:
            db.execute("CREATE TABLE t (x)")
    saved = tmp_path / "saved"
    assert patrol("backup", "-c", site, "--to", saved).returncode == 0
    with (saved / "patrol.sqlite").open("r+b") as file:
        file.seek(200)
        file.write(b"\xff" * 16)
    before = (tmp_path / "data" / "patrol.sqlite").read_bytes()
    done = patrol("restore", "-c", site, "--from", saved, "--force")
    assert done.returncode == 1 and "changed since the backup" in done.stderr
    assert (tmp_path / "data" / "patrol.sqlite").read_bytes() == before
    other = tmp_path / "other.yaml"
    other.write_text(site.read_text().replace("id: tower-a", "id: tower-b"))
    wrong = patrol("restore", "-c", other, "--from", saved, "--force")
    assert wrong.returncode == 1 and "site 'tower-a'" in wrong.stderr
