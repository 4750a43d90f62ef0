"""The fields and time of a reading's line of InfluxDB line protocol, defined once.

A line is `<head><fields> <ms>`: the head (measurement, tags, a space) is built in Python by
`agent.tsdb.LineSerializer`; the rest follows the rules below. They are written out twice
from these same definitions: in Python (`fields`, `line`) for the few lines the TSDB
writer builds one by one (bisecting a refused batch), and as an SQL expression (`sql_line`)
for the buffer's batches, which SQLite assembles in C without a Python object per reading.
tests/test_lineprotocol.py compares both outputs over awkward inputs.

- fields in key order, as influxdb-client writes them: `quality`, `reason`, `value`;
- `quality=1i` (good) or `quality=0i` (bad, with `reason` as a string field);
- `value` as the shortest exact decimal text (Python's repr without a trailing `.0`), left
  out when the value is not finite: line protocol has no NaN or infinity;
- a string field's `\\` and `"` escaped by a backslash;
- the time in milliseconds, rounded half away from zero.
"""

from __future__ import annotations

GOOD = "quality=1i"
BAD = "quality=0i"
STRING_ESCAPES = (("\\", "\\\\"), ('"', '\\"'))
"""(character, escaped) in a string field's value, the backslash first: applied one after
the other (as SQL's nested replace() does) each later one sees only unescaped text."""

_STRING_TABLE = str.maketrans(dict(STRING_ESCAPES))
_MEASUREMENT_TABLE = str.maketrans({",": "\\,", " ": "\\ ", "\n": "\\n", "\t": "\\t",
                                    "\r": "\\r"})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n",
                            "\t": "\\t", "\r": "\\r"})
"""influxdb-client's escapes of a measurement and of a tag's key or value (its
`_ESCAPE_MEASUREMENT` and `_ESCAPE_KEY`), written here so the agent need not import the
library (and numpy with it) unless a v2 TSDB is configured."""


def head(measurement: str, tags: dict[str, str | None]) -> str:
    """A series' measurement and tags, then a space, as influxdb-client's Point writes them:
    tags sorted by key, a tag without a value (None or empty) left out, a value ending in
    a backslash followed by a space."""
    pairs = []
    for key, value in sorted(tags.items()):
        if value is None:
            continue
        key_text, value_text = key.translate(_KEY_TABLE), value.translate(_KEY_TABLE)
        if value_text.endswith("\\"):
            value_text += " "
        if key_text and value_text:
            pairs.append(f"{key_text}={value_text}")
    return measurement.translate(_MEASUREMENT_TABLE) + "".join("," + p for p in pairs) + " "


def value_text(value: float) -> str | float | None:
    """`value` as line protocol writes a float: its shortest exact decimal text. A value
    line protocol cannot write comes back as a float (+-inf) or None (NaN), never text:
    the buffer stores exactly this, so in SQL as here "text" means "write the field"."""
    if type(value) is float and value - value == 0.0:  # finite (x - x is NaN otherwise)
        text = repr(value)  # the buffer's hot path: one per reading stored
        return text[:-2] if text.endswith(".0") else text
    text = repr(float(value))  # float(): a numpy scalar's repr is not a number
    if text.endswith(".0"):
        return text[:-2]
    if text[-1] in "nf":  # nan, inf, -inf (a number's repr ends in a digit)
        return None if text == "nan" else float(value)
    return text


def to_ms(ts: float) -> int:
    """Milliseconds, rounded half away from zero, as SQLite's round() does in `sql_line`."""
    return int(ts * 1000 + (0.5 if ts >= 0 else -0.5))


def string_field(text: str) -> str:
    """A string field's value, quoted and escaped."""
    return '"' + text.translate(_STRING_TABLE) + '"'


def fields(value: str | float | None, reason: str | None) -> str:
    """The fields of a reading: `value` is its `value_text`, `reason` None when good."""
    out = GOOD if reason is None else f"{BAD},reason={string_field(reason)}"
    return f"{out},value={value}" if isinstance(value, str) else out


def line(head: str, ts: float, value: float, reason: str | None) -> str:
    """One reading's whole line."""
    return f"{head}{fields(value_text(value), reason)} {to_ms(ts)}"


def _sql_string_field(column: str) -> str:
    expr = column
    for raw, escaped in STRING_ESCAPES:
        expr = f"replace({expr}, '{raw}', '{escaped}')"
    return f"""'"' || {expr} || '"'"""


def sql_line(head: str, value: str, bad: str, ts: str) -> str:
    """The same line as an SQL expression over columns: `value` holds the `value_text`
    (only text is written), `bad` the reason or NULL, `ts` seconds."""
    ms = f"CAST(round({ts} * 1000) AS INTEGER)"  # not format(): %s stops at a NUL
    return f"""CASE
        WHEN {bad} IS NULL AND typeof({value}) = 'text'  -- the usual reading
        THEN {head} || '{GOOD},value=' || {value} || ' ' || {ms}
        ELSE {head}
            || CASE WHEN {bad} IS NULL THEN '{GOOD}'
                    ELSE '{BAD},reason=' || {_sql_string_field(bad)} END
            || CASE WHEN typeof({value}) = 'text' THEN ',value=' || {value} ELSE '' END
            || ' ' || {ms}
        END"""
