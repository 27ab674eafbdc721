"""The Prometheus config and alert rules of the compose stack (prometheus/), checked by the
tool made for it: `promtool check config` (which checks the rule files it names too) and
`promtool test rules`, whose unit tests (prometheus/tests/*.test.yml) drive every alert with
synthetic series, firing and near miss. promtool is Debian's prometheus package's binary,
unpacked into the venv by `make install` (no daemon installed); without it those tests skip and
say so. The cross-checks with the code (metric names, the drift threshold) need no promtool.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from serving.metrics import ServingMetrics
from skindx.config import compose_config
from tests.conftest import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which("promtool", path=str(REPO_ROOT / ".venv/bin"))
    if found is None:
        pytest.skip(
            "promtool not found: `make install` unpacks it from Debian's prometheus package into "
            ".venv/bin (or: apt-get install prometheus)"
        )
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_config_and_its_rule_files():
    out = run_promtool("check", "config", "prometheus.yml").stdout
    assert "1 rule files found" in out and "SUCCESS" in out
    assert (
        f"SUCCESS: {len(alert_rules())} rules found"
        in run_promtool("check", "rules", ALERTS.name).stdout
    )


def test_every_alert_passes_its_promtool_unit_tests():
    assert RULE_TESTS, "no prometheus/tests/*.test.yml"
    result = run_promtool(
        "test", "rules", *(str(p.relative_to(PROMETHEUS_DIR)) for p in RULE_TESTS)
    )
    assert "FAILED" not in result.stdout + result.stderr


def test_every_alert_has_a_firing_case_and_a_silent_case():
    """A rule without both could be always-on or never-on and still pass its unit tests."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a test where they fire"
    assert names - silent == set(), "alerts without a test where they stay silent"
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"


def test_the_issue_s_alerts_exist_with_a_severity_and_a_summary():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in (
        "SkindxApiErrorRate",
        "SkindxApiLatencyP99High",
        "SkindxQueueFull",
        "SkindxDriftScoreHigh",
        "SkindxNoModelReady",
    ):
        assert name in rules, name
        assert rules[name]["labels"]["severity"] in {"critical", "warning"}, name
        assert rules[name]["annotations"]["summary"], name
        assert "for" in rules[name], f"{name}: no `for:` (the container may override it)"


def exported_series_names(tmp_path: Path) -> set[str]:
    """Every sample name an API replica's /metrics can expose (serving/metrics.py), the drift
    gauges included (they appear once a summary.json exists)."""
    summary = tmp_path / "summary.json"
    summary.write_text(
        '{"drift_score": 0.1, "drift_detected": false, "generated_at": "2026-12-01T00:00:00+00:00"}'
    )
    metrics = ServingMetrics(summary)
    names = set()
    for family in metrics.registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_the_rules_use_only_metrics_that_the_api_exports(tmp_path):
    """A renamed metric would silence its alert for good: absent series never fire."""
    exported = exported_series_names(tmp_path)
    checked = 0
    for rule in alert_rules():
        used = set(re.findall(r"\bskindx_[a-z0-9_]+", rule["expr"]))
        assert used <= exported, f"{rule['alert']}: {sorted(used - exported)} not in /metrics"
        checked += len(used)
    assert checked >= len(alert_rules()), "the rules name (almost) no skindx_ metric"


def test_the_drift_alert_uses_the_monitor_s_threshold():
    """One threshold: the monitor raises its alarm at monitor.drift_share (conf/monitor), and
    the alert fires at the same score."""
    share = compose_config(conf_dir=REPO_ROOT / "conf")["monitor"]["drift_share"]
    (rule,) = [r for r in alert_rules() if r["alert"] == "SkindxDriftScoreHigh"]
    match = re.fullmatch(r"max\(skindx_drift_score\{[^}]*\}\) >= ([0-9.]+)", rule["expr"].strip())
    assert match, rule["expr"]
    assert float(match.group(1)) == share
    assert str(share) in rule["annotations"]["summary"]


def test_every_api_replica_is_scraped_through_docker_dns():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "skindx-api"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["api"] and sd["type"] == "A" and sd["port"] == 8000
    assert "static_configs" not in job
    assert config["rule_files"] == [ALERTS.name]
