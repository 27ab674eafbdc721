"""DVC stage `validate`: the Great Expectations suite on data/raw/ (see skindx.data.validation).

Writes reports/validation/summary.json and the Data Docs site; exits non-zero, naming each
failed critical expectation with example rows, so that the pipeline stops here.
"""

from pathlib import Path

from skindx.cli import run_cli
from skindx.config import stage_params
from skindx.data.errors import ValidationFailed
from skindx.data.runlog import log_data_run
from skindx.data.validation import DOCS_DIR, SUMMARY_FILE, validate, write_summary


def main() -> None:
    params = stage_params("data", "mlflow")
    data = params["data"]
    report = validate(Path(data["raw_dir"]), data["classes"], docs_dir=DOCS_DIR)
    write_summary(report, SUMMARY_FILE)
    print(report.format())
    log_data_run(
        "validate",
        params,
        metrics={
            "success": float(report.success),
            "n_expectations": report.n_expectations,
            "n_failed": len(report.failed),
            "n_warnings": len(report.warnings),
            "n_rows": report.n_rows,
        },
        artifacts=[SUMMARY_FILE],
        tags={"validation": "passed" if report.success else "failed"},
    )
    if not report.success:
        raise ValidationFailed(
            f"{report.failure_message()}\nfull report: {SUMMARY_FILE} and {DOCS_DIR}/index.html"
        )
    print(f"validate: all critical expectations passed ({len(report.warnings)} warning(s))")


if __name__ == "__main__":
    run_cli(main, "validate")
