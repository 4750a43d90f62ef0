"""The install path a gateway takes: the project's wheel, into a fresh venv, then `patrol
check` on every site this repo ships and on `patrol init`'s starter.

What it catches: a module or data file (templates, the console's static files, the demo
and starter sites) left out of the wheel by pyproject.toml's package lists, an import of a
package the wheel does not declare, and an entry point that does not start.

The dependencies are not downloaded (slow; `make wheelhouse` does that): the fresh venv
sees, through one .pth, a directory of links to exactly the distributions the wheel's
metadata requires (with their own requirements and extras) as installed in this venv, and
nothing else. Patrol itself must be imported from the fresh venv, not this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from importlib.metadata import Distribution, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent.parent
SECRETS = {name: "s3cret" for name in ("MQTT_PASSWORD", "INFLUX_TOKEN", "PATROL_AGENT_TOKEN",
                                       "DINGTALK_URL", "DINGTALK_SECRET")}
"""What examples/site.yaml names by *_env (tests/test_examples.py)."""


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def required(wheel: Path) -> list[Distribution]:
    """The distributions `wheel` requires, transitively, as installed in this venv."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    todo = [(Requirement(r), frozenset({""})) for r in metadata.get_all("Requires-Dist") or []]
    found: dict[str, Distribution] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement, context = todo.pop()
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in context):
            continue  # an extra nobody asked for, or another platform's
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in done:
            continue
        done.add(key)
        dist = found.setdefault(key[0], distribution(requirement.name))
        extras = frozenset({"", *requirement.extras})
        todo += [(Requirement(r), extras) for r in dist.requires or []]
    return list(found.values())


def link_dependencies(wheel: Path, into: Path) -> None:
    """Links in `into` to the top-level files of each distribution `wheel` requires."""
    into.mkdir()
    for dist in required(wheel):
        assert dist.files is not None, f"{dist.name} has no RECORD"
        for top in {f.parts[0] for f in dist.files if f.parts[0] != ".."}:
            source = Path(str(dist.locate_file(top)))
            if not (into / top).exists() and source.exists():
                (into / top).symlink_to(source)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel installed (its dependencies from this venv)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # A copy of what the wheel is built from, so no build/ appears in the shared checkout
    # and no file left there by an older build can slip into this one.
    src = tmp / "src"
    src.mkdir()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name in ("pyproject.toml", project["project"]["readme"]):
        shutil.copy(ROOT / name, src / name)
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", src,
        cwd=tmp)
    (wheel,) = (tmp / "dist").glob("facility_patrol-*-py3-none-any.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
        "--no-index", wheel, cwd=tmp)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                    cwd=tmp).stdout.strip())
    link_dependencies(wheel, tmp / "dependencies")
    (site / "zz-dependencies.pth").write_text(f"{tmp / 'dependencies'}\n")
    return venv


def test_the_wheel_holds_the_code_and_its_data_files_only(fresh: Path) -> None:
    (wheel,) = (fresh.parent / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("agent/cli.py", "agent/sdnotify.py", "agent/starter/site.yaml",
                   "agent/starter/standards/plant-room.yaml", "agent/demo_site/site.yaml",
                   "api/console/templates/base.html", "api/migrations/env.py"):
        assert needed in names, needed
    assert any(n.startswith("api/notify/templates/") and n.endswith(".j2") for n in names)
    assert any(n.startswith("api/console/static/vendor/") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/"))]


def test_patrol_from_the_wheel_checks_every_shipped_site(fresh: Path, tmp_path: Path) -> None:
    python, patrol = fresh / "bin" / "python", fresh / "bin" / "patrol"
    where = run(python, "-c", "import agent, api, collector, common, rules\n"
                "for m in (agent, api, collector, common, rules): print(m.__file__)",
                cwd=tmp_path).stdout.split()
    assert all(Path(f).is_relative_to(fresh) for f in where), where  # not this checkout

    checked = run(patrol, "check", "-c", ROOT / "examples" / "site.yaml", cwd=tmp_path,
                  env=SECRETS)
    assert "site.yaml: ok: site tower-a" in checked.stdout

    # the demo's site as `patrol demo` writes it, from the installed package's files
    run(python, "-c", "import pathlib, agent.demo as d; d.write_site(pathlib.Path('demo'), "
        "modbus_port=5020, mqtt_url='mqtt://127.0.0.1:1883', api_port=8080, "
        "topic_prefix='demo', alert_port=8099)", cwd=tmp_path)
    checked = run(patrol, "check", "-c", tmp_path / "demo" / "site.yaml", cwd=tmp_path)
    assert "site.yaml: ok: site" in checked.stdout

    run(patrol, "init", tmp_path / "starter", "--site-id", "plant-x", cwd=tmp_path)
    checked = run(patrol, "check", "-c", tmp_path / "starter" / "site.yaml", cwd=tmp_path)
    assert "ok: site plant-x, 2 assets" in checked.stdout


def test_the_wheels_requirements_are_met(fresh: Path, tmp_path: Path) -> None:
    """pip's own check, in the fresh venv: every requirement the wheel declares is
    installed at a version it accepts."""
    result = run(sys.executable, "-m", "pip", "--python", fresh / "bin" / "python", "check",
                 cwd=tmp_path)
    assert "No broken requirements found" in result.stdout
