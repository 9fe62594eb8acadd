"""``exectrack-consumer consume --workers N``: N group members under one supervisor.

Each worker is a full ``consume`` process (``python -m exectrack.consumer consume
--workers 1``) in the same consumer group: Kafka's rebalancing spreads the
partitions over them exactly as over replicas. The supervisor (supervisor.py)
starts them, forwards SIGTERM/SIGINT, restarts one that exits unexpectedly with
capped exponential backoff (restarts.py) and serves one aggregated ``/livez`` and
``/readyz`` for probes (health.py); each worker serves its own ``/metrics``.

- restarts.py: the backoff policy and what an exit means (pure);
- supervisor.py: the processes, signals, exit status;
- health.py: the supervisor's endpoints and its own metrics;
- child.py: what a worker does because it is one (log field, parent death).
"""

from __future__ import annotations

from exectrack.consumer.workers.restarts import RestartPolicy, Restarts, describe_exit
from exectrack.consumer.workers.supervisor import Supervisor, supervise, worker_port

__all__ = ["RestartPolicy", "Restarts", "Supervisor", "describe_exit", "supervise", "worker_port"]
