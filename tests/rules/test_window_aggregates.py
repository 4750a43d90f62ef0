"""The window checker's incremental aggregates equal numpy's over the same window."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.checks import WindowChecker
from rules.standard import Standard

VALUES = st.floats(-1e6, 1e6, allow_nan=False)


@given(agg=st.sampled_from(["min", "max", "p95", "mean", "sum", "delta", "count"]),
       stream=st.lists(st.tuples(st.integers(0, 30), VALUES), min_size=1, max_size=80))
@settings(max_examples=300, deadline=None)
def test_window_aggregates_match_numpy(agg: str, stream: list[tuple[int, float]]) -> None:
    standard = Standard.model_validate({
        "id": "W", "title": "w", "metric": "m",
        "check": {"kind": "window", "agg": agg, "over": "60s", "max": 1e9}})
    checker = WindowChecker(standard, standard.check)  # type: ignore[arg-type]
    ts, seen = 0.0, []
    for gap, value in stream:
        ts += gap
        checker.observe(ts, value)
        seen.append((ts, value))
        window = np.array([v for t, v in seen if t > ts - 60])
        expected = {"min": window.min(), "max": window.max(),
                    "p95": np.percentile(window, 95), "mean": window.mean(),
                    "sum": window.sum(), "delta": window[-1] - window[0],
                    "count": len(window)}[agg]
        assert abs(checker.value - expected) <= 1e-6 * max(1.0, abs(expected))
