"""exectrack benchmarks: ``python -m bench --profile quick|full`` (results land in bench/results/).

Each benchmark module has a ``main(argv) -> int``; the two steps they all share
live here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from exectrack.consumer.logs import configure_logging
from exectrack.consumer.settings import Settings
from exectrack.producer.settings import KafkaSettings


def setup_logging() -> None:
    """Log like the service: EXECTRACK_LOG_LEVEL, EXECTRACK_LOG_FORMAT."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def peak_rss_mb(pid: int) -> float:
    """Peak resident set of a live process since its exec (``VmHWM``), in MB.

    Not ``wait4``'s ``ru_maxrss``: that also counts the moments between fork and
    exec, when the child still has the (possibly large) benchmark's memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no VmHWM for pid {pid}")


class MachineCpu:
    """How busy all CPUs of the machine were between ``start()`` and ``busy()`` (0..1).

    From ``/proc/stat``'s first line: everything but idle and iowait counts as busy.
    It shows whether a phase was bound by the whole machine (the consumer,
    the broker and the database share its cores) or by one process."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def start(self) -> None:
        self._start = self._read()

    def busy(self) -> float:
        busy, total = self._read()
        return (busy - self._start[0]) / max(1, total - self._start[1])


def consumer_env(kafka: KafkaSettings, url: str, group: str, **extra: str) -> dict[str, str]:
    """The environment of a child ``exectrack-consumer consume`` in a benchmark: this
    process's, pointed at ``kafka``'s topics, the database ``url`` and the consumer group
    ``group``, no health server, warnings only; ``extra`` adds or overrides variables."""
    return {
        **os.environ,
        "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "EXECTRACK_KAFKA__TOPIC": kafka.topic,
        "EXECTRACK_KAFKA__DLQ_TOPIC": kafka.dlq_topic,
        "EXECTRACK_DATABASE__URL": url,
        "EXECTRACK_GROUP_ID": group,
        "EXECTRACK_HEALTH_PORT": "0",
        "EXECTRACK_LOG_LEVEL": "warning",
        **extra,
    }
