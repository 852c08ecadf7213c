"""Check the Prometheus configuration, the alert rules and the Grafana dashboard.

The promtool tests need Debian's ``prometheus`` package; the dashboard's metric
names are checked with the standard library alone.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "config" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_FILE = PROMETHEUS_DIR / "rules" / "adoption.rules.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "tests" / "adoption.rules.test.yml"
DASHBOARD_FILE = REPO_ROOT / "config" / "grafana" / "dashboards" / "adoption-rate.json"

EXPORTED_METRICS = frozenset(
    {
        "self_service_adoption_ratio",
        "self_service_interactions",
        "support_interactions",
        "support_channel_interactions",
        "adoption_newest_event_age_seconds",
        "adoption_events_late_total",
        "adoption_events_duplicate_total",
        "adoption_events_consumed_total",
        "adoption_events_rejected_total",
        "adoption_event_time_lag_seconds",
        "adoption_consumer_lag_records",
        "adoption_worker_ready",
    }
)

# PromQL keywords that look like metric names to the tokenizer below.
PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool"})

# Values that make a dashboard query valid PromQL for promtool.
GRAFANA_VARIABLE_VALUES = {"$__rate_interval": "1m", "$tenant": ".+", "$window": ".+"}

PROMTOOL_MISSING = "promtool not installed: apt-get install prometheus"
requires_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason=PROMTOOL_MISSING)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args`` and capture its output, without raising on failure."""
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=300, check=False
    )


def format_result(result: subprocess.CompletedProcess[str]) -> str:
    """Format a promtool run's exit code and output for an assertion message."""
    return f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def load_dashboard() -> dict[str, Any]:
    with DASHBOARD_FILE.open(encoding="utf-8") as file:
        dashboard: dict[str, Any] = json.load(file)
    return dashboard


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every panel that is not a row, including panels nested in collapsed rows."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (panel title, PromQL expression) for every panel target."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel["targets"]
    ]


def metric_names(expr: str) -> set[str]:
    """Extract the metric names that a PromQL expression selects.

    Label matchers, range and subquery brackets, strings and grouping clauses
    are removed first, so what remains is function names (followed by an
    opening parenthesis), keywords, numbers and metric names.
    """
    stripped = re.sub(r'\{[^}]*\}|\[[^\]]*\]|"[^"]*"', " ", expr)
    stripped = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped
    )
    names: set[str] = set()
    # The lookbehind skips the unit letters of durations such as 1w.
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*(\(?)", stripped):
        name, opening_parenthesis = match.groups()
        if opening_parenthesis or name in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def test_metric_names_parses_promql() -> None:
    expr = (
        'sum by (reason) (rate(adoption_events_rejected_total{reason!="late"}[5m]))'
        " and on(instance) adoption_worker_ready offset 1w"
    )

    assert metric_names(expr) == {"adoption_events_rejected_total", "adoption_worker_ready"}


@pytest.mark.prometheus
@requires_promtool
def test_rules_file_is_valid() -> None:
    result = run_promtool("check", "rules", str(RULES_FILE))

    assert result.returncode == 0, format_result(result)


@pytest.mark.prometheus
@requires_promtool
def test_rules_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(RULES_TEST_FILE))

    assert result.returncode == 0, format_result(result)
    assert "SUCCESS" in result.stdout, format_result(result)


@pytest.mark.prometheus
@requires_promtool
def test_prometheus_config_is_valid() -> None:
    result = run_promtool("check", "config", str(PROMETHEUS_CONFIG))

    assert result.returncode == 0, format_result(result)
    # The rule_files glob must resolve to the rules file, or Prometheus loads no alerts.
    assert str(RULES_FILE.relative_to(REPO_ROOT)) in result.stdout, format_result(result)


@pytest.mark.prometheus
@requires_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules: list[dict[str, str]] = []
    for index, (_title, expr) in enumerate(dashboard_queries(load_dashboard())):
        for variable, value in GRAFANA_VARIABLE_VALUES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard_query_{index}", "expr": expr})
    # JSON is valid YAML, so promtool reads this file as a rules file.
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = run_promtool("check", "rules", str(rules_file))

    assert rules, "the dashboard has no queries"
    assert result.returncode == 0, format_result(result)


def test_dashboard_queries_use_exported_metrics() -> None:
    queries = dashboard_queries(load_dashboard())

    assert queries, "the dashboard has no queries"
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric name found in {expr!r}"
        unknown = names - EXPORTED_METRICS
        assert not unknown, f"panel {title!r}: {expr!r} selects unknown metrics {sorted(unknown)}"


def test_dashboard_variables_use_exported_metrics() -> None:
    variables = load_dashboard()["templating"]["list"]

    assert {variable["name"] for variable in variables} == {"tenant", "window"}
    for variable in variables:
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
        assert match, f"variable {variable['name']}: unexpected query {variable['definition']!r}"
        assert match.group(1) in EXPORTED_METRICS, variable["definition"]
        assert match.group(2) == variable["name"], variable["definition"]


def test_dashboard_uses_prometheus_datasource_uid() -> None:
    dashboard = load_dashboard()
    expected = {"type": "prometheus", "uid": "prometheus"}

    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == expected, variable["name"]
    for panel in dashboard_panels(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, f"{panel['title']} {target['refId']}"
