"""Reports (SPEC 7.3): the compliance report's figures, their KPI status and exports.

`compliance_report` builds the JSON form; `to_csv` and `to_xlsx` turn it into tables.
docs/reports.md defines every figure. No HTTP here: refusals are api.errors exceptions
(`BadPeriod`, `BadGrouping`).
"""

from api.reports.export import CSV_TYPE, XLSX_TYPE, to_csv, to_xlsx
from api.reports.period import DEFAULT_DAYS, MAX_DAYS, BadPeriod, Window, moment, window_of
from api.reports.report import BadGrouping, compliance_report
from api.reports.sql import GROUPS
from api.reports.status import Target, status_of, statuses

__all__ = ["CSV_TYPE", "DEFAULT_DAYS", "GROUPS", "MAX_DAYS", "XLSX_TYPE", "BadGrouping",
           "BadPeriod", "Target", "Window", "compliance_report", "moment", "status_of", "statuses",
           "to_csv", "to_xlsx", "window_of"]
