"""A pytest plugin that appends every test phase's duration to a JSON-lines file as it ends.

Why: `make test` on CI takes 40-70 minutes depending on the machine's speed (its limit is 90),
and pytest's own `--durations` prints only when the whole run ends: a run stopped half way, or
one that hits CI's limit, leaves nothing to tell where the time went. This file keeps each
finished phase, so a partial run still ranks the slow tests.

    PYTHONPATH=src:scripts .venv/bin/python -m pytest -p pytest_durations [paths ...]
    SKINDX_TEST_DURATIONS=out.jsonl ...   # default: reports/test-durations.jsonl

One line per phase: {"id": node id, "when": setup|call|teardown, "s": seconds, "outcome": ...};
a module or session fixture's cost lands in the setup of the first test that uses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def pytest_runtest_logreport(report) -> None:
    out = Path(os.environ.get("SKINDX_TEST_DURATIONS", "reports/test-durations.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "id": report.nodeid,
        "when": report.when,
        "s": round(report.duration, 2),
        "outcome": report.outcome,
    }
    with out.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
