"""DVC stage `validate`: the Great Expectations suite on data/raw/ (see skindx.data.validation).

Writes reports/validation/summary.json and the Data Docs site; exits non-zero, naming each
failed critical expectation with example rows, so that the pipeline stops here.
"""

from skindx.cli import run_cli
from skindx.config import ProjectPaths, stage_params
from skindx.data.errors import ValidationFailed
from skindx.data.runlog import log_data_run
from skindx.data.validation import validate, write_summary


def main() -> None:
    params = stage_params("data", "mlflow")
    data, paths = params["data"], ProjectPaths.from_params(params)
    summary, docs = paths.validation_summary, paths.validation_docs
    report = validate(paths.raw_dir, data["classes"], docs_dir=docs)
    write_summary(report, summary)
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
        artifacts=[summary],
        tags={"validation": "passed" if report.success else "failed"},
    )
    if not report.success:
        raise ValidationFailed(
            f"{report.failure_message()}\nfull report: {summary} and {docs}/index.html"
        )
    print(f"validate: all critical expectations passed ({len(report.warnings)} warning(s))")


if __name__ == "__main__":
    run_cli(main, "validate")
