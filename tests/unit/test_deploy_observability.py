"""The Grafana dashboard and the Prometheus alerts reference only metrics that
exectrack.consumer.metrics exports, with the right suffixes for their types.

Names exported are taken from prometheus_client's registry after importing
exectrack.consumer.metrics: a counter ``x`` is queried as ``x_total``, a histogram ``h`` as
``h_bucket``/``h_sum``/``h_count``, a gauge by its name. When ``promtool`` is on
PATH (Debian's prometheus package), the rules and every dashboard query are also
parsed by it, and the alerts' unit tests (deploy/prometheus/alerts_test.yaml) run:
their input series are checked against the same registry, so a rule that names a
metric the code does not export fails here twice (by name, and by not firing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import exectrack.consumer.metrics  # registers the metrics
from tests.support.deploy import DEPLOY, ROOT, load_yaml

DASHBOARD = DEPLOY / "grafana" / "exectrack.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yaml"
METRIC = re.compile(r"\bexectrack_[a-zA-Z0-9_]+")
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def exported() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("exectrack_"):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def dashboard_queries() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> list[str]:
        found: list[str] = []
        for panel in panels:
            found += [t["expr"] for t in panel.get("targets", [])]
            found += walk(panel.get("panels", []))
        return found

    return walk(json.loads(DASHBOARD.read_text())["panels"])


def alert_queries() -> list[str]:
    return [rule["expr"] for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def alert_test_series() -> list[str]:
    """The input series of the promtool tests (``metric{labels}``)."""
    return [s["series"] for t in load_yaml(ALERT_TESTS)["tests"] for s in t["input_series"]]


def test_metrics_module_exports_what_docs_promise() -> None:
    assert exectrack.consumer.metrics.LAST_BATCH is not None
    assert "exectrack_last_batch_timestamp_seconds" in exported()
    assert "exectrack_batch_duration_seconds_bucket" in exported()


@pytest.mark.parametrize("source", ["dashboard", "alerts", "alert tests"])
def test_referenced_metrics_exist(source: str) -> None:
    queries = {
        "dashboard": dashboard_queries, "alerts": alert_queries, "alert tests": alert_test_series,
    }[source]()  # fmt: skip
    assert queries
    used = {name for query in queries for name in METRIC.findall(query)}
    assert used - exported() == set(), f"unknown metrics in {source}"


def test_dashboard_covers_the_issue() -> None:
    used = {name for query in dashboard_queries() for name in METRIC.findall(query)}
    for needed in (
        "exectrack_events_consumed_total",
        "exectrack_events_dead_lettered_total",
        "exectrack_batch_duration_seconds_bucket",
        "exectrack_db_write_duration_seconds_bucket",
        "exectrack_db_errors_total",
        "exectrack_consumer_lag_events",
        "exectrack_assigned_partitions",
        "exectrack_purge_runs_total",
        "exectrack_reap_runs_total",
        # the Executions row (docs/read/metrics.md)
        "exectrack_executions_active",
        "exectrack_executions_stuck",
        "exectrack_executions_terminal_total",
        "exectrack_execution_duration_seconds_bucket",
    ):
        assert needed in used
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "exectrack"


def test_alerts_cover_the_issue() -> None:
    groups = load_yaml(ALERTS)["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    for name in (
        "ExectrackConsumerLagGrowing",
        "ExectrackDeadLetterRate",
        "ExectrackDatabaseWriteErrors",
        "ExectrackNoBatches",
        "ExectrackPurgeFailing",
        "ExectrackPurgeStale",
        "ExectrackExecutionsStuck",
        "ExectrackExecutionFailureRate",
    ):
        assert name in rules
    assert "exectrack_last_batch_timestamp_seconds" in rules["ExectrackNoBatches"]["expr"]
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_execution_panels_and_alerts_have_their_tests() -> None:
    """The Executions row has the issue's panels; every execution alert has a promtool test
    that expects it to fire (and one that expects it not to)."""
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    row = titles.index("Executions")
    for title in ("Running now", "Stuck", "Failures today", "Duration p50 per report",
                  "Duration p95 per report", "Failures today by report"):  # fmt: skip
        assert titles.index(title) > row
    quantiles = [q for q in dashboard_queries() if "exectrack_execution_duration" in q]
    assert all("histogram_quantile" in q and "report_id" in q for q in quantiles)
    groups = load_yaml(ALERTS)["groups"]
    (executions,) = [g for g in groups if g["name"] == "exectrack.executions"]
    cases = [c for t in load_yaml(ALERT_TESTS)["tests"] for c in t["alert_rule_test"]]
    for rule in executions["rules"]:
        expected = [bool(c["exp_alerts"]) for c in cases if c["alertname"] == rule["alert"]]
        assert {True, False} <= set(expected), rule["alert"]
        assert rule["alert"] in (ROOT / "docs" / "operations.md").read_text()


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_parses_alerts_and_dashboard(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], check=True, capture_output=True)
    # the dashboard's queries as recording rules, Grafana's variables substituted
    rules = [
        {
            "record": f"exectrack:dashboard_query_{n}",
            "expr": q.replace("$__rate_interval", "5m").replace("$job", ".*"),
        }
        for n, q in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.json"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_alert_unit_tests_pass() -> None:
    """deploy/prometheus/alerts_test.yaml: the execution alerts fire on the series the code
    exports, with the labels and annotations operators read, and stay quiet otherwise."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
