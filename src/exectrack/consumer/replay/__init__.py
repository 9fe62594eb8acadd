"""Replay: rebuild the tables from the topic, and check a rebuild against the live tables.

- ``rebuild``: read the topic from its start through the live consumer's own batch path
- ``verify``: compare two databases row by row in bounded memory
- ``_report``: a replay's options, plan, progress display and summary (private:
  ``rebuild`` re-exports what callers use)
"""

__all__ = ["rebuild", "verify"]
