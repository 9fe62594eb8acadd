"""The read side: what people use to see executions (docs/operations.md).

- ``watch``: a live terminal view: counts by status and the latest executions
- ``gauges``: executions active and stuck, read on an interval for /metrics
"""

__all__ = ["gauges", "watch"]
