"""skindx_drift_score on the API's /metrics comes from the monitor's summary.json, read at each
scrape (the real app in-process; the summary written by the real monitor in test_monitor)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.monitor.conftest import MonitorPackage


def drift_samples(client) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name.startswith("skindx_drift")
    }


@pytest.mark.slow
def test_metrics_export_the_last_reports_drift_score(monitor_package: MonitorPackage, tmp_path):
    from tests.serving.conftest import in_process_api

    summary = tmp_path / "summary.json"
    with in_process_api(model_dir=monitor_package.model_dir, monitoring_summary=summary) as api:
        client = api.test_client
        assert drift_samples(client) == {}  # no report yet: no value, not a made-up 0
        now = datetime.now(UTC).replace(microsecond=0)
        summary.write_text(
            json.dumps(
                {"generated_at": now.isoformat(), "drift_score": 0.42, "drift_detected": True}
            )
        )
        assert drift_samples(client) == {
            "skindx_drift_score": 0.42,
            "skindx_drift_detected": 1.0,
            "skindx_drift_report_timestamp_seconds": now.timestamp(),
        }
        # a window with too few records has no score: only the report's time remains
        summary.write_text(
            json.dumps(
                {"generated_at": now.isoformat(), "drift_score": None, "drift_detected": None}
            )
        )
        assert drift_samples(client) == {"skindx_drift_report_timestamp_seconds": now.timestamp()}
        summary.write_text("{not json")
        assert drift_samples(client) == {}
