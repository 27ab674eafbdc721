"""Schemathesis (its CLI) against the live /openapi.json of a real server: no 5xx, every
status, content type, header and body as documented, invalid input refused, auth enforced.

Excluded: `positive_data_acceptance`, because "schema-valid" here means any bytes in a
multipart field, while the API rightly refuses bytes that are not a JPEG/PNG/WebP image.
(The pytest plugin's `from_fixture` does not run on pytest 9.2: it reads `Function._nodeid`.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN
from tests.serving.conftest import ADMIN_TOKEN, run_server

pytestmark = pytest.mark.slow


def test_api_conforms_to_its_openapi_schema(packaged_model_dir: Path, tmp_path: Path):
    with run_server(
        tmp_path,
        model_dir=packaged_model_dir,
        admin_token=ADMIN_TOKEN,
        reviewer_token=ADMIN_TOKEN,  # one --header below authorises both
    ) as srv:
        schema = srv.client().get("/openapi.json").json()
        assert "/admin/reload" in schema["paths"]  # the admin API is enabled, so it is tested
        assert "/feedback" in schema["paths"]  # and so is the feedback API
        result = subprocess.run(
            [
                str(VENV_BIN / "schemathesis"),
                "run",
                f"{srv.url}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                "30",
                "--seed",
                "20251126",
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
                "--no-color",
                "--header",
                f"Authorization: Bearer {ADMIN_TOKEN}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        server_log = srv.log()
    report = result.stdout[-12000:] + result.stderr[-2000:]
    assert result.returncode == 0, f"{report}\n--- server log ---\n{server_log[-3000:]}"
    assert "Tested: 8" in result.stdout, report
    assert "Traceback" not in server_log
