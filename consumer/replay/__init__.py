"""Replay: rebuild the tables from the topic, and check a rebuild against the live tables.

- ``rebuild``: read the topic from its start through the live consumer's own batch path
- ``report``: a replay's options, plan, progress display and summary
- ``verify``: compare two databases row by row in bounded memory
"""

__all__ = ["rebuild", "report", "verify"]
