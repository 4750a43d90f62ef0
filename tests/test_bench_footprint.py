"""`python -m bench.footprint --quick` runs against real peers and prints every figure it
promises. Only that it runs: its numbers depend on the machine, so none is checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                    reason="needs mosquitto (make services)")
def test_footprint_quick_prints_its_figures() -> None:
    # fewer flood readings and seconds of load than --quick's own: the figures' lines are
    # what is checked, and this test was the suite's longest (about 50 s)
    result = subprocess.run([sys.executable, "-m", "bench.footprint", "--quick",
                             "--readings", "20000", "--seconds", "5"], cwd=ROOT,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for figure in ("idle: VmRSS", "a one-asset, one-standard MQTT site: VmRSS", "load:",
                   "% of one core", "disk writes", "the readings as stored", "flood:",
                   "peak RSS", "readings/s"):
        assert figure in out, out
