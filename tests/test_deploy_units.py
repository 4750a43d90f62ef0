"""The systemd units in deploy/: systemd's own checker finds nothing to say about them, their
exposure stays what docs/deploy.md says, and the settings the agent relies on are there.

`systemd-analyze verify` wants ExecStart's program to exist, so each unit is checked as a
copy whose ExecStart names this venv's `patrol` instead of /opt/patrol's; nothing else is
changed. `--man=no --generators=no` keep it offline (systemd is not PID 1 in CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
UNITS = ("patrol-agent.service", "patrol-api.service")
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(Debian: package systemd)")


def settings(unit: str) -> dict[str, list[str]]:
    """Every Key=Value of a unit file, repeated keys kept in order."""
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_finds_nothing(unit: str, tmp_path: Path) -> None:
    patrol = Path(sys.executable).parent / "patrol"
    assert patrol.exists(), "the project is installed in this venv (make test does it)"
    text = (DEPLOY / unit).read_text()
    assert "ExecStart=/opt/patrol/bin/patrol " in text
    (tmp_path / unit).write_text(text.replace("/opt/patrol/bin/patrol", str(patrol)))
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "verify", "--man=no", "--generators=no",
                             str(tmp_path / unit)], capture_output=True, text=True, timeout=60)
    # An unknown or misspelt key is only a warning (exit 0): any output at all fails.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_the_figure_docs_give(unit: str) -> None:
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "security", "--offline=true", "--threshold=20",
                             str(DEPLOY / unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr  # 2.0 at most
    figure = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d)",
                       result.stdout)
    assert figure is not None, result.stdout
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert f"`{unit}`: {figure[1]}" in docs, f"docs/deploy.md should say {figure[1]}"


def test_units_say_what_the_agent_relies_on() -> None:
    for unit in UNITS:
        got = settings(unit)
        for key, value in (("Type", "notify"), ("NotifyAccess", "main"),
                           ("Restart", "on-failure"), ("User", "patrol"),
                           ("ProtectSystem", "strict"), ("StateDirectory", "patrol"),
                           ("ReadWritePaths", "/var/lib/patrol"),
                           ("NoNewPrivileges", "yes")):
            assert got.get(key) == [value], (unit, key, got.get(key))
        assert got["WatchdogSec"] == ["60s"], unit
    agent = settings("patrol-agent.service")
    assert agent["SupplementaryGroups"] == ["dialout"]
    assert agent["DevicePolicy"] == ["closed"]
    assert {"char-ttyUSB rw", "char-ttyAMA rw"} <= set(agent["DeviceAllow"])
    assert "PrivateDevices" not in agent  # it would hide the serial ports
    assert agent["LoadCredential"] == ["forward-token:/etc/patrol/credentials/forward-token"]
    # what site.yaml's forward.token_file must name: systemd puts the credential there
    assert ("token_file: /run/credentials/patrol-agent.service/forward-token"
            in (ROOT / "docs" / "deploy.md").read_text())
