"""YAML that remembers where every key came from, and compiler-style config errors.

Every config problem is reported as `FILE:LINE: key.path: message`, one per line, so a
person (or an editor) can jump straight to it. pydantic does the validation; this module
only keeps line numbers and turns pydantic's errors into those lines.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agent.errors import AgentError

Loc = tuple[str | int, ...]

_SECRET_WORDS = ("password", "token", "secret")


@dataclass(frozen=True, slots=True)
class Problem:
    """One config error at one place."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:"
        return f"{where} {self.key}: {self.message}" if self.key else f"{where} {self.message}"


class ConfigError(AgentError):
    """Invalid configuration; carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def display_path(path: Path) -> str:
    """The path as a person would type it: relative to the working directory if inside it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class YamlDoc:
    """A parsed YAML file with the line of every key and list item."""

    path: Path
    data: Any
    lines: dict[Loc, int]
    text: str = ""
    spans: dict[Loc, tuple[int, int, int]] = field(default_factory=dict)
    """Each node's (start, end) offsets in `text` and the column it starts at."""

    @property
    def name(self) -> str:
        return display_path(self.path)

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest part of `loc` that exists in the file."""
        while loc not in self.lines and loc:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(self.name, self.line_of(loc), format_loc(loc), message)

    def text_of(self, loc: Loc) -> str | None:
        """The node at `loc` as written (comments kept, indentation removed); None when
        that text alone does not read back as the same value (an alias, a merge key)."""
        if loc not in self.spans:
            return None
        start, end, column = self.spans[loc]
        lines = self.text[start:end].splitlines()
        if len(lines) > 1:  # a node in one line is whole as it is (a long JSON line: no pad)
            lines[0] = " " * column + lines[0]
        while lines and lines[-1].strip()[:1] in ("", "#"):  # the next item's comments
            lines.pop()
        written = textwrap.dedent("\n".join(lines)) + "\n"
        try:
            same = yaml.safe_load(written) == _value_at(self.data, loc)
        except yaml.YAMLError:
            return None
        return written if same else None


def format_loc(loc: Loc) -> str:
    """`('modbus', 'devices', 0, 'type')` -> `modbus.devices[0].type`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).isprintable():  # a key holding a newline would split the line
            out += f"[{str(part)!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(path: Path) -> YamlDoc:
    """Parse one YAML file, keeping lines; syntax errors and duplicate keys are problems."""
    name = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(name, 0, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(name, 1, "", f"not UTF-8 text: {exc.reason}")]) from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_aliases(node, name)
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:
        raise ConfigError([Problem(name, 1, "", "YAML nested too deeply")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError([Problem(name, line, "", f"YAML syntax error: {message}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(name, 1, "", f"YAML error: {exc}")]) from exc
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    spans: dict[Loc, tuple[int, int, int]] = {}
    problems: list[Problem] = []
    if node is not None:
        _record_lines(node, (), lines, problems, name, spans)
    if problems:
        raise ConfigError(problems)
    return YamlDoc(path, data, lines, text, spans)


MAX_VALUES = 1_000_000
"""Values a document may expand to through its aliases: far beyond any site, and a
"billion laughs" of nested aliases is refused instead of filling the memory."""


def _check_aliases(root: yaml.Node, name: str) -> None:
    """ConfigError for an alias inside the node it names (a loop) or a document that
    aliases expand past MAX_VALUES; cheap: each node is sized once."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise ConfigError([Problem(name, node.start_mark.line + 1, "",
                                       "this node holds an alias to itself (a loop)")])
        open_.add(key)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        total = 1 + sum(size(child) for child in children)
        open_.discard(key)
        sizes[key] = total
        if total > MAX_VALUES:
            raise ConfigError([Problem(name, node.start_mark.line + 1, "",
                                       f"aliases expand this to over {MAX_VALUES:,} values")])
        return total

    size(root)


def _record_lines(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], name: str,
    spans: dict[Loc, tuple[int, int, int]],
) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    spans[loc] = (node.start_mark.index, node.end_mark.index, node.start_mark.column)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append(
                    Problem(name, key_node.start_mark.line + 1, format_loc((*loc, key)),
                            "duplicate key (the earlier value would be silently ignored)")
                )
            seen.add(key)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _record_lines(value_node, (*loc, key), lines, problems, name, spans)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*loc, index), lines, problems, name, spans)


def validate(model: type[BaseModel], doc: YamlDoc, *, context: dict[str, Any] | None = None
             ) -> Any:
    """Validate the whole document against `model`, or raise ConfigError."""
    try:
        return model.model_validate({} if doc.data is None else doc.data, context=context)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, doc)) from None


def problems_from(exc: ValidationError, doc: YamlDoc, base: Loc = ()) -> list[Problem]:
    """pydantic errors -> one `FILE:LINE: key: message` problem each."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = _real_loc(doc.data, base, tuple(error["loc"]))
        if error["type"] == "union_tag_invalid":
            loc = (*loc, "kind")
        problems.append(doc.problem(loc, _message(error, loc)))
    return problems


def _real_loc(data: Any, base: Loc, loc: Loc) -> Loc:
    """Drop the parts of a pydantic loc that are union tags, not keys in the file."""
    node = data
    for part in base:
        node = _child(node, part)
    out = list(base)
    for i, part in enumerate(loc):
        child = _child(node, part)
        if child is _MISSING:
            if i == len(loc) - 1 or not isinstance(node, dict):
                out.append(part)
            continue  # a tag such as 'range' or 'function-after[...]'
        out.append(part)
        node = child
    return tuple(out)


_MISSING = object()


def _value_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        data = _child(data, part)
    return data


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _MISSING


def _message(error: Any, loc: Loc) -> str:
    kind = error["type"]
    given = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        choices = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        return f"{given!r} is not one of {choices}"
    if kind == "union_tag_invalid":
        choices = ctx.get("expected_tags", "").replace("'", "")
        return f"{ctx.get('tag')!r} is not one of {choices}"
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        if any(word in key.lower() for word in _SECRET_WORDS):
            return (f"unknown key; secrets are never written in the file: use {key}_env "
                    f"(an environment variable) or {key}_file (a file holding it)")
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message
