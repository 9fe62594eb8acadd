"""Retention: how long an execution is kept, and the jobs that act on it (docs/retention.md).

- ``policy``: the policy, pure (no I/O): a terminal execution -> its ``retention_until``
- ``policy_file``: the policy file (TOML): load, check, locate errors
- ``purge``: delete executions past ``retention_until``, in short chunks
- ``reap``: close stuck executions by publishing ``timed_out`` events
- ``reapply``: recompute stored rows' ``retention_until`` under the current policy
- ``jobs``: purge and reap on a schedule inside the consumer process
- ``cli``: the commands ``purge``, ``reap``, ``retention show|check|reapply``

``policy`` and ``policy_file`` import nothing else of the consumer but its errors
(exectrack.consumer.errors); the fold and the settings use them.
"""

__all__ = ["cli", "jobs", "policy", "policy_file", "purge", "reap", "reapply"]
