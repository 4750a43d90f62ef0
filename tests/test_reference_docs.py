"""docs/reference/configuration.md is generated from the config models: it must match them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import reference  # noqa: E402


def test_every_key_has_a_meaning() -> None:
    missing = [key for key, _, _, meaning in reference.all_rows() if meaning == "?"]
    assert not missing, f"describe these keys (Field description or MEANINGS): {missing}"


def test_meanings_name_only_keys_that_exist() -> None:
    keys = {key for key, *_ in reference.all_rows()}
    stale = sorted(set(reference.MEANINGS) - keys)
    assert not stale, f"MEANINGS names keys the models no longer have: {stale}"


def test_the_committed_page_is_what_the_models_say() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr



def test_readme_and_docs_link_only_inside_the_repository() -> None:
    """A reader of the repository alone can follow every relative link."""
    import re

    outside = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text) + re.findall(r"`(\.\./[^`\s]+)`",
                                                                           text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            resolved = (page.parent / target).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                outside.append(f"{page.relative_to(ROOT)}: {target}")
    assert not outside, outside
