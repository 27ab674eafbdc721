"""DVC stage `ingest`: find the HAM10000 source and copy it into `paths.raw_dir` (data/raw/).

Source order: data.source, $SKINDX_DATA_DIR, data.default_source, the ISIC 2018 download.
With data.feedback.db set, the reviewed cases of the prediction log (their stored images) are
added too (skindx.data.feedback); preprocess puts them in the training split only.
"""

import os
import sys
from pathlib import Path

# data.feedback reads the prediction log with serving.predlog, a top-level package of this
# checkout (not installed like skindx): make it importable as `python -m` would
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from skindx.cli import run_cli
from skindx.config import ProjectPaths, stage_params
from skindx.data.feedback import FeedbackSource, add_feedback_cases, read_reviewed_cases
from skindx.data.ingest import MANIFEST_FILE, ingest
from skindx.data.runlog import log_data_run
from skindx.data.sources import materialize, read_source, resolve_source


def main() -> None:
    params = stage_params("data", "mlflow")
    data, paths = params["data"], ProjectPaths.from_params(params)
    resolved = resolve_source(data)
    print(f"ingest: using source {resolved.describe()}")
    folder = materialize(resolved, data.get("download") or {}, paths.downloads_dir)
    table = read_source(folder)
    print(f"ingest: layout {table.layout}, metadata {table.metadata_file}")
    raw_dir = paths.raw_dir
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd())
    feedback = FeedbackSource.from_params(data.get("feedback"), root)
    # read the log before writing anything: an unreadable one stops ingest with raw_dir intact
    cases = read_reviewed_cases(feedback) if feedback else None
    manifest = ingest(table, raw_dir, source_label=str(folder))
    run_params = {"source": folder, "source_origin": resolved.origin, "layout": table.layout}
    feedback_metrics = {}
    if cases is not None:
        manifest = add_feedback_cases(raw_dir, cases)
        summary = manifest["feedback"]
        skipped = ", ".join(f"{n} {why}" for why, n in summary["skipped"].items() if n)
        print(
            f"ingest: feedback {feedback.describe()}: {summary['n_reviewed']} reviewed, "
            f"{summary['n_cases']} added to the training data"
            + (f" (left out: {skipped})" if skipped else "")
        )
        run_params |= {f"feedback_{k}": summary[k] for k in ("source", "since", "until")}
        feedback_metrics = {"feedback_reviewed": summary["n_reviewed"]}
        feedback_metrics |= {"feedback_cases": summary["n_cases"]}
        feedback_metrics |= {f"feedback_skipped_{k}": n for k, n in summary["skipped"].items()}
    print(
        f"ingest: {manifest['n_rows']} rows, {manifest['n_images']} images -> {raw_dir}/ "
        f"({manifest['missing_images']} missing, {manifest['unlisted_images']} unlisted); "
        f"data_hash {manifest['data_hash'][:12]}"
    )
    log_data_run(
        "ingest",
        params,
        run_params=run_params,
        metrics={
            "n_rows": manifest["n_rows"],
            "n_images": manifest["n_images"],
            "missing_images": manifest["missing_images"],
            **{f"count_{dx}": n for dx, n in manifest["counts"].items() if dx.isidentifier()},
            **feedback_metrics,
        },
        artifacts=[raw_dir / MANIFEST_FILE],
        tags={"data_source": str(folder), "layout": table.layout},
    )


if __name__ == "__main__":
    run_cli(main, "ingest")
