"""Mutated site.yaml and standards files through `patrol check`: exit 0 or 2, never more.

Starts from examples/site.yaml and examples/standards/*.yaml and changes values, keys,
types and YAML structure (data mutations dumped back, and raw text edits), then runs the
CLI's own `main` in-process. Any exception out of `main`, exit status 1, or a traceback on
stderr fails the example: a config a person can write is a `FILE:LINE` problem or fine.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import main

EXAMPLES = Path(__file__).parent.parent / "examples"
SITE = (EXAMPLES / "site.yaml").read_text(encoding="utf-8")
STANDARDS = {p.name: p.read_text(encoding="utf-8")
             for p in sorted((EXAMPLES / "standards").glob("*.yaml"))}

# Values a person (or a bad template) puts where another was expected.
ODD_TEXT = ["", " ", "10q", "1e400s", "-5s", "0s", "1e308", "nan", "inf", "-inf", "Mon-Fry",
            "Mon-Fri 08:00-18:00", "25:00-26:00", "$", "$.", "$[", "$['x", "{asset}", "#",
            "+/#", "a/#/b", "(a - b) ** 0.5", " + ".join(["a"] * 3000), "__import__('os')",
            "a" * 5000, "\x00", "\ud800", "Asia", "Asia/Nowhere", "sqlite:///", "http://",
            "mqtt://:0", "postgresql://u@h/db", "256KB", "1e99GB", "-1", "9" * 400,
            "127.0.0.1:99999", "[", "{", "*", "**/*.yaml", "/dev/null", "..", "~"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**400]),
    st.floats(), st.sampled_from(ODD_TEXT), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def _containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every dict and list in a document, the root first."""
    found = [path] if isinstance(node, dict | list) else []
    children = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, child in children:
        found += _containers(child, (*path, key))
    return found


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """`text` with a few data or text mutations."""
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 4)) == 0:  # raw text: YAML structure itself
            lines = text.splitlines(keepends=True) or [""]
            i = draw(st.integers(0, len(lines) - 1))
            how = draw(st.sampled_from(["drop", "repeat", "indent", "dedent", "insert"]))
            if how == "drop":
                del lines[i]
            elif how == "repeat":
                lines.insert(i, lines[i])
            elif how == "indent":
                lines[i] = "  " + lines[i]
            elif how == "dedent":
                lines[i] = lines[i].lstrip()
            else:
                at = draw(st.integers(0, len(lines[i])))
                chunk = draw(st.sampled_from([":", "- ", "{", "]", "&a ", "*a", "!!python/x ",
                                              "\t", "'", '"', "? ", "|", "%", "@", "\\u"]))
                lines[i] = lines[i][:at] + chunk + lines[i][at:]
            text = "".join(lines)
            continue
        try:
            doc = yaml.load(text, Loader=yaml.CSafeLoader)
        except (yaml.YAMLError, ValueError):
            continue  # already broken by a text mutation: keep it so
        if not isinstance(doc, dict | list):
            continue
        path = draw(st.sampled_from(_containers(doc)))
        node = _at(doc, path)
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        how = draw(st.sampled_from(["replace", "delete", "add", "wrap", "rename"]))
        if how == "add" or not keys:
            key = draw(st.text(max_size=8)) if isinstance(node, dict) else None
            if key is None:
                node.append(draw(values))
            else:
                node[key] = draw(values)
        else:
            key = draw(st.sampled_from(keys))
            if how == "replace":
                node[key] = draw(values)
            elif how == "delete":
                del node[key]
            elif how == "wrap":
                node[key] = [node[key]]
            elif isinstance(node, dict):  # rename
                node[draw(st.text(max_size=8))] = node.pop(key)
        with contextlib.suppress(yaml.YAMLError, ValueError):  # e.g. a lone surrogate
            text = yaml.dump(doc, Dumper=yaml.CSafeDumper, allow_unicode=True, sort_keys=False)
    return text


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_patrol_check_of_mutated_files_exits_0_or_2_without_a_traceback(
        tmp_path: Path, data: st.DataObject) -> None:
    site = tmp_path / "site.yaml"
    (tmp_path / "standards").mkdir(exist_ok=True)
    which = data.draw(st.sampled_from(["site", *STANDARDS]))
    site_text = data.draw(mutated(SITE)) if which == "site" else SITE
    _write(site, site_text)
    for name, text in STANDARDS.items():
        _write(tmp_path / "standards" / name,
               data.draw(mutated(text)) if which == name else text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["check", *data.draw(st.sampled_from([["--no-secrets"], []])), "-c",
                     str(site)])
    assert code in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    if code == 2:  # every line names a file and a line
        for line in err.getvalue().splitlines():
            assert line.split(":", 2)[1].isdigit(), line


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as out:
        out.write(text)
    os.utime(path)
