"""The Prometheus files under docker/ checked by Debian's promtool: the alert rules parse and
fire on the cases of tests/ops/alerts_test.yml, every Grafana panel's query parses, and both
name only series the engine exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import Metric

from infinite_scheduler.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_CASES = Path(__file__).with_name("alerts_test.yml")
SERIES = re.compile(r"\binfinite_scheduler_[a-z_]+")
#: Standard series a query may use besides the engine's own.
STANDARD = {"up"}


def promtool_run(promtool: str, *args: str | Path) -> str:
    done = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def exported_series() -> set[str]:
    """Every series name a scrape of an engine can show (counters with _total, histograms with
    _bucket/_count/_sum), labelled ones included before their first label is used."""
    registry = Metrics().registry
    names: set[str] = set()
    for family in registry.collect():
        names |= series_names(family)
    return names


def series_names(family: Metric) -> set[str]:
    if family.type == "counter":
        return {f"{family.name}_total"}
    if family.type == "histogram":
        return {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
    return {family.name}


def alert_rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_alert_rules_pass_promtool_check(promtool: str) -> None:
    out = promtool_run(promtool, "check", "rules", ALERTS)
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_each_alert_fires_on_its_case_and_none_on_a_healthy_cluster(promtool: str) -> None:
    """promtool evaluates the rules over the synthetic series of alerts_test.yml and compares
    the alerts (labels and rendered annotations) at each evaluation time."""
    out = promtool_run(promtool, "test", "rules", ALERT_CASES)
    assert "SUCCESS" in out


def test_every_alert_has_a_case_that_fires_it() -> None:
    cases = yaml.safe_load(ALERT_CASES.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_the_prometheus_config_loads_the_rules_and_passes_promtool(promtool: str) -> None:
    out = promtool_run(promtool, "check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in out


def test_every_dashboard_query_passes_promtool(
    promtool: str, dashboard_queries: list[tuple[str, str]], tmp_path: Path
) -> None:
    """Each panel target written as a recording rule: promtool parses its PromQL."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr}
        for n, (_, expr) in enumerate(dashboard_queries)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool_run(promtool, "check", "rules", path)
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_a_bad_query_fails_promtool_so_the_check_above_means_something(
    promtool: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yml"
    rule = {"record": "dashboard:bad", "expr": "sum by (entity (rate(x[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [rule]}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, check=False)
    assert done.returncode != 0


def test_the_dashboard_and_alerts_name_only_series_the_engine_exports(
    dashboard_queries: list[tuple[str, str]],
) -> None:
    exported = exported_series()
    used = {(title, name) for title, expr in dashboard_queries for name in SERIES.findall(expr)} | {
        (rule["alert"], name) for rule in alert_rules() for name in SERIES.findall(rule["expr"])
    }
    assert {(where, name) for where, name in used if name not in exported} == set()
    assert all(SERIES.search(expr) or "up{" in expr for _, expr in dashboard_queries)


def test_the_dashboard_shows_what_issue_16_asks_for(
    dashboard_queries: list[tuple[str, str]],
) -> None:
    text = " ".join(expr for _, expr in dashboard_queries)
    for series in (
        "jobs_fired_total",
        "fire_lateness_seconds_bucket",
        "jobs_failed_total",
        "jobs_held",
        "jobs_backlog",
        "nodes_live",
        "heartbeat_lag_seconds",
        "store_conflicts_total",
        "store_failovers_total",
        "shards_ahead",
        "shards_dropped_total",
        "unfinished_rows_dropped_total",
        "category_waiting",
        "throttled",
    ):
        assert f"infinite_scheduler_{series}" in text, series


def test_every_alert_has_a_runbook_line_in_the_deployment_guide() -> None:
    guide = (ROOT / "docs/deploy.md").read_text()
    runbook = guide[guide.index("## Alerts and what to do") :]
    assert [r["alert"] for r in alert_rules() if f"| `{r['alert']}` |" not in runbook] == []
