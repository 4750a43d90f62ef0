"""The report as a table: CSV (UTF-8 with a BOM, so Excel reads Chinese names right) and
XLSX (openpyxl). One row per group and one for the total; nested figures flattened to
dotted names (`alarm_load.per_day`, `backlog.30d+`), then the previous period's under
`previous.`, then each status under `status.`. The Pareto lists are a text column each in
the CSV and a sheet of their own in the XLSX."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from api.reports.sql import KEY_FIELDS

CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PARETO_FIELDS = ("by", "rank", "site", "asset", "standard", "value", "share",
                 "cumulative_share")


def _key_names(group_by: str) -> list[str]:
    return ["month"] if group_by == "month" else list(KEY_FIELDS[group_by])


def flatten(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"alarm_load": {"per_day": 3}}` -> `{"alarm_load.per_day": 3}`; the Pareto list as
    one text per `by`: "asset/standard (value); ..."."""
    flat: dict[str, Any] = {}
    for name, value in figures.items():
        if name == "pareto":
            for by in ("count", "violating_s"):
                flat[f"{prefix}pareto.{by}"] = "; ".join(
                    f"{item['asset']}/{item['standard'] or '-'} ({item['value']:g})"
                    for item in value if item["by"] == by)
        elif isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def table(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The header and the rows: `row` (group or total), the key's fields, the figures,
    the previous period's, the statuses."""
    keys = _key_names(report["group_by"])
    total = report["total"]
    names = list(flatten(total["figures"]))
    status_names = sorted({name for entry in [*report["groups"], total]
                           for name in entry["status"]})
    header = ["row", *keys, *names, *(f"previous.{n}" for n in names),
              *(f"status.{n}" for n in status_names)]
    rows = []
    for kind, entry in [*(("group", g) for g in report["groups"]), ("total", total)]:
        figures, previous = flatten(entry["figures"]), flatten(entry["previous"])
        key = entry.get("key", {})
        rows.append([kind, *(key.get(k) for k in keys), *(figures.get(n) for n in names),
                     *(previous.get(n) for n in names),
                     *(entry["status"].get(n) for n in status_names)])
    return header, rows


def to_csv(report: dict[str, Any]) -> bytes:
    """The table as CSV, UTF-8 with a BOM; empty cells for figures without a value."""
    header, rows = table(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue().encode("utf-8-sig")


def _pareto_rows(report: dict[str, Any]) -> Iterator[list[Any]]:
    keys = _key_names(report["group_by"])
    for kind, entry in [*(("group", g) for g in report["groups"]),
                        ("total", report["total"])]:
        key = entry.get("key", {})
        for item in entry["figures"]["pareto"]:
            yield [kind, *(key.get(k) for k in keys), *(item[f] for f in PARETO_FIELDS)]


def to_xlsx(report: dict[str, Any]) -> bytes:
    """The table on a `figures` sheet, the Pareto lists on `pareto`, the window on
    `about`."""
    from openpyxl import Workbook  # only this export needs it

    book = Workbook(write_only=True)
    header, rows = table(report)
    sheet = book.create_sheet("figures")
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    pareto = book.create_sheet("pareto")
    keys = _key_names(report["group_by"])
    pareto.append(["row", *keys, *PARETO_FIELDS])
    for row in _pareto_rows(report):
        pareto.append(row)
    about = book.create_sheet("about")
    for name in ("from", "to", "group_by", "timezone"):
        about.append([name, report[name]])
    about.append(["previous.from", report["previous_period"]["from"]])
    about.append(["previous.to", report["previous_period"]["to"]])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
