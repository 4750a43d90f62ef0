"""`patrol init` (issue 17): a commented starter site.yaml and standards that `patrol
check` passes, never written over an existing site."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def patrol(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_init_writes_a_starter_that_patrol_check_passes(tmp_path: Path) -> None:
    made = patrol("init", "site", "--site-id", "tower-x", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    site = tmp_path / "site" / "site.yaml"
    assert "id: tower-x" in site.read_text() and "__" not in site.read_text()
    assert (tmp_path / "site" / "standards" / "plant-room.yaml").exists()
    checked = patrol("check", "-c", site, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "site tower-x, 2 assets, 2 Modbus points, 1 MQTT subscriptions, 2 standards" \
        in checked.stdout


def test_init_never_overwrites_without_force_and_checks_the_site_id(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text("site: {id: mine}\n")
    refused = patrol("init", cwd=tmp_path)
    assert refused.returncode == 2 and "not overwritten" in refused.stderr
    assert (tmp_path / "site.yaml").read_text() == "site: {id: mine}\n"
    bad = patrol("init", "--site-id", "Tower A", "--force", cwd=tmp_path)
    assert bad.returncode == 2 and "not a site id" in bad.stderr
    forced = patrol("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and "id: my-site" in (tmp_path / "site.yaml").read_text()


def test_init_puts_the_buffer_in_the_data_directory_the_units_may_write(
        tmp_path: Path) -> None:
    """Under the systemd units only /var/lib/patrol is writable: `--data-dir` sets
    `buffer.path` there, so the installer need not edit it."""
    made = patrol("init", "etc", "--data-dir", tmp_path / "state", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "etc" / "site.yaml").read_text()
    assert f"path: {tmp_path / 'state' / 'buffer.sqlite'}" in text
    assert "data/buffer.sqlite" not in text
    checked = patrol("check", "-c", tmp_path / "etc" / "site.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
