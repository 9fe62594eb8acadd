"""Prometheus metrics the consumer exports (``/metrics`` on the health port).

Names are part of the operator contract (dashboards and alerts reference them;
deploy/ tests check they exist): add, never rename.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "exectrack_events_consumed_total", "Kafka records read from the events topic."
)
EVENTS_APPLIED = Counter(
    "exectrack_events_applied_total", "Valid events folded into committed database writes."
)
EVENTS_WITHOUT_KEY = Counter(
    "exectrack_events_without_key_total",
    "Valid events read with a null or empty Kafka key (accepted: docs/events.md, "
    '"Transport"); a producer that should key by execution_id or report_id.',
)
EVENTS_DEAD_LETTERED = Counter(
    "exectrack_events_dead_lettered_total",
    "Records sent to the dead-letter topic, by reason.",
    ["reason"],
)
DEAD_LETTERS_DROPPED = Counter(
    "exectrack_dead_letters_dropped_total",
    "Dead letters the DLQ could not carry, dropped after the decision of consumer/dlq/send.py "
    "(logged as dead_letter_dropped with the source topic/partition/offset), by cause.",
    ["cause"],
)
RECORDS_UNREADABLE = Counter(
    "exectrack_records_unreadable_total",
    "Offsets skipped because no record could be read from their bytes (logged as "
    "records_unreadable with topic, partition and offsets; consumer/kafka.py), by partition.",
    ["topic", "partition"],
)
DEAD_LETTERS_TRUNCATED = Counter(
    "exectrack_dead_letters_truncated_total",
    "Dead letters sent with their key, value or headers cut to fit the DLQ "
    "(header exectrack.dlq.truncated).",
)
DEAD_LETTER_RETRIES = Counter(
    "exectrack_dead_letter_retries_total",
    "Transient failures sending dead letters (retried; no offset is committed meanwhile).",
)
EXECUTIONS_WRITTEN = Counter(
    "exectrack_executions_written_total", "report_executions rows inserted or updated."
)
# Deprecated, always 0: the writer no longer skips a fold whose retention_until
# looks past (a batch is a partial fold; CONTRACT.md "Retention"). Kept registered
# so that dashboards and alerts outside this repository that query it keep
# resolving (names: add, never rename); tombstones are counted just below.
EXECUTIONS_SKIPPED_EXPIRED = Counter(
    "exectrack_executions_skipped_expired_total",
    "Deprecated, always 0: the writer no longer skips folds that look expired.",
)
EXECUTIONS_SKIPPED_PURGED = Counter(
    "exectrack_executions_skipped_purged_total",
    "Batch folds not written because the execution was purged (it has a tombstone).",
)
EVENT_ID_CONFLICTS = Counter(
    "exectrack_event_id_conflicts_total",
    "Event ids seen with two different contents (same id, different digest) in a write.",
)
FIELDS_OUT_OF_RANGE = Counter(
    "exectrack_fields_out_of_range_total",
    "Optional data values outside their column's range, by field: retention_until "
    "saturated, the others (times, counts, started_by, JSON fields nested too deep) not "
    "stored (docs/events.md).",
    ["field"],
)
BATCH_SIZE = Histogram(
    "exectrack_batch_size_events",
    "Records per consumed batch.",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000),
)
BATCH_SECONDS = Histogram(
    "exectrack_batch_duration_seconds",
    "Time to decode, fold, write and commit one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DB_WRITE_SECONDS = Histogram(
    "exectrack_db_write_duration_seconds",
    "Time of one database transaction writing a batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_ERRORS = Counter("exectrack_db_errors_total", "Failed database transactions, by kind.", ["kind"])
CONSUMER_LAG = Gauge(
    "exectrack_consumer_lag_events",
    "Offsets between what this consumer committed and the partition's last stable offset "
    "(what a read_committed reader can read: the high watermark unless a transaction "
    "is open), per assigned partition.",
    ["topic", "partition"],
)
TRANSACTION_HELD = Gauge(
    "exectrack_transaction_held_records",
    "High watermark minus last stable offset, per assigned partition: offsets written "
    "after the oldest undecided Kafka transaction, which no read_committed reader gets "
    "until the transaction commits or aborts (0: nothing held).",
    ["topic", "partition"],
)
LAST_STABLE_OFFSET = Gauge(
    "exectrack_partition_last_stable_offset",
    "The partition's last stable offset as last fetched, per assigned partition: with "
    "exectrack_transaction_held_records > 0, an offset that stops moving is a stuck "
    "open transaction.",
    ["topic", "partition"],
)
LAST_BATCH = Gauge(
    "exectrack_last_batch_timestamp_seconds", "Unix time of the last committed batch."
)
KAFKA_C_EXTENSION = Gauge(
    "exectrack_kafka_c_extension",
    "1 if aiokafka parses records with its C extension, 0 if in pure Python (slower).",
)
ASSIGNED_PARTITIONS = Gauge(
    "exectrack_assigned_partitions", "Partitions currently assigned to this consumer."
)

# retention jobs (docs/retention.md): purge, reaper, reapply
PURGE_ROWS_DELETED = Counter(
    "exectrack_purge_rows_deleted_total", "report_executions rows deleted by the purge."
)
PURGE_RUNS = Counter(
    "exectrack_purge_runs_total",
    "Purge runs, by outcome (success, dry_run, busy: another purge held the lock, error).",
    ["outcome"],
)
PURGE_SECONDS = Histogram(
    "exectrack_purge_duration_seconds",
    "Duration of a successful purge run.",
    buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
PURGE_LAST_SUCCESS = Gauge(
    "exectrack_purge_last_success_timestamp_seconds", "Unix time of the last successful purge."
)
REAP_PUBLISHED = Counter(
    "exectrack_reap_timed_out_published_total",
    "exectrack.execution.timed_out events the reaper published for stale executions.",
)
REAP_RUNS = Counter(
    "exectrack_reap_runs_total",
    "Reaper runs, by outcome (success, dry_run, busy, error).",
    ["outcome"],
)
REAP_LAST_SUCCESS = Gauge(
    "exectrack_reap_last_success_timestamp_seconds", "Unix time of the last successful reaper run."
)
RETENTION_REAPPLIED = Counter(
    "exectrack_retention_reapplied_rows_total",
    "Rows whose retention_until a reapply (command or schedule) changed.",
)
