"""The read side: what people use to see executions (docs/operations.md, docs/read/).

- ``queries``: list, detail, per-report statistics, duration series, stuck executions
- ``watch``: a live terminal view: counts by status and the latest executions
"""

__all__ = ["queries", "watch"]
