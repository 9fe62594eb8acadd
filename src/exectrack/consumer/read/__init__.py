"""The read side: what people use to see executions (docs/operations.md).

- ``watch``: a live terminal view: counts by status and the latest executions
"""

__all__ = ["watch"]
