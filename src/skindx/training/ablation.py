"""A recipe ablation: the real ingest -> validate -> preprocess stages once, then train and
evaluate once per variant (the baseline and each recipe option alone), same splits and seed,
in a scratch project directory with its own MLflow store. Prints a Markdown table of test
balanced accuracy with the evaluate stage's bootstrap interval, and the delta to the baseline;
writes the rows as JSON.

    python -m skindx.training.ablation --dir /tmp/ablation \\
        --base experiment=demo data.image_size=32 model.arch=resnet18 \\
               data.train_max_per_class=150 train.epochs=6

Why whole stages and not the Trainer alone: the numbers are then the ones `dvc repro` would
report for that config (the same preprocessing, test split, bootstrap), with the commands to
reproduce each row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from skindx.config import compose_config, write_params
from skindx.training.loop import read_history

REPO = Path(__file__).resolve().parents[3]
DATA_STAGES = ("ingest.py", "validate.py", "preprocess.py")
# one recipe option ON per row (train.* overrides); the baseline is the `--base` config
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "trivial_augment": ["train.augment.trivial_augment=true"],
    "random_erasing": ["train.augment.random_erasing=0.25"],
    "rotate": ["train.augment.rotate_degrees=180"],
    "mixup": ["train.mix.mixup_alpha=0.2"],
    "cutmix": ["train.mix.cutmix_alpha=1.0"],
    "ema": ["train.ema.enabled=true", "train.ema.decay=0.998"],
    "progressive": ["train.progressive.start_size=24", "train.progressive.epochs_at_start=3"],
    "amp_on": ["train.amp=on"],
}


def _run(script: str, project: Path, env: dict[str, str]) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / script)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"{script} failed in {project}:\n{done.stderr[-3000:]}")
    print(f"  {script}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="scratch project directory (not with --table)")
    parser.add_argument("--base", nargs="*", default=["experiment=quick"], help="Hydra overrides")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--row",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "OVERRIDE"),
        help="an extra row: its name, then its train.* overrides (repeatable), e.g. a "
        "time-matched progressive row: --row progressive_16ep train.epochs=16 "
        "train.progressive.start_size=48 train.progressive.epochs_at_start=8",
    )
    parser.add_argument("--out", type=Path, help="JSON rows (default: DIR/ablation.json)")
    parser.add_argument(
        "--table",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="only print the table of these result files, merged in order (e.g. the rows of "
        "two drivers run side by side, one thread each); trains nothing",
    )
    args = parser.parse_args(argv)
    if args.table:
        print(table(merge_results(args.table)))
        return
    if args.dir is None:
        parser.error("--dir is required (the scratch project the rows train in)")
    variants = {name: VARIANTS[name] for name in args.variants}
    for name, *overrides in args.row:
        if name in variants:
            parser.error(f"--row {name}: that name is already a row; pick another")
        variants[name] = overrides

    project = args.dir.resolve()
    project.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
    }
    params_file = project / "params.yaml"
    write_params(compose_config(list(args.base), conf_dir=REPO / "conf"), params_file)
    paths = compose_config(list(args.base), conf_dir=REPO / "conf")["paths"]
    if not (project / paths["processed_dir"]).exists():
        print("data stages", file=sys.stderr)
        for script in DATA_STAGES:
            _run(script, project, env)

    out = args.out or project / "ablation.json"
    rows = json.loads(out.read_text()) if out.exists() else {}
    for name, row_overrides in variants.items():
        overrides = [*args.base, *row_overrides]
        write_params(compose_config(overrides, conf_dir=REPO / "conf"), params_file)
        print(f"{name}: {' '.join(row_overrides) or '(base)'}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        _run("train.py", project, env)
        _run("evaluate.py", project, env)
        metrics = json.loads((project / paths["metrics"]).read_text())
        rows[name] = {
            "overrides": row_overrides,
            "threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "metrics": metrics,
            "seconds": round(time.perf_counter() - started, 1),
            # the next row overwrites history.csv: keep this row's epochs (validation curve,
            # seconds per epoch) with its metrics
            "history": read_history(project / paths["history_csv"]),
        }
        out.write_text(json.dumps({"base": args.base, **rows}, indent=2) + "\n")
        rows.pop("base", None)
    print(table(rows))


def merge_results(paths: list[Path]) -> dict:
    """The rows of several result files in order. A file whose `--base` adds overrides to the
    first file's (a row that needs its own data stages, e.g. data.color_constancy) shows them
    in its rows' overrides, so that each row still reads as one change against the first base."""
    merged: dict = {}
    reference: list[str] | None = None
    for path in paths:
        results = json.loads(Path(path).read_text())
        base = list(results.get("base", []))
        reference = base if reference is None else reference
        extra = [o for o in base if o not in reference]
        for name, row in results.items():
            if name == "base":
                continue
            if name in merged:
                raise SystemExit(f"{path}: row {name!r} is already in an earlier file; rename it")
            merged[name] = {**row, "overrides": [*extra, *row["overrides"]]}
    return merged


def table(rows: dict) -> str:
    rows = {k: v for k, v in rows.items() if k != "base"}
    nan = float("nan")
    base = rows.get("baseline", {}).get("metrics", {}).get("balanced_accuracy")
    lines = [
        "| variant | overrides | test BMA | 95 % interval | Δ BMA | macro-F1 | mel recall | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        m = row["metrics"]
        ci = (m.get("balanced_accuracy_ci_low", nan), m.get("balanced_accuracy_ci_high", nan))
        mel = m.get("per_class", {}).get("mel", {}).get("recall", nan)
        delta = "" if base is None else f"{m['balanced_accuracy'] - base:+.3f}"
        lines.append(
            f"| {name} | {' '.join(row['overrides']) or '—'} | {m['balanced_accuracy']:.3f} | "
            f"{ci[0]:.3f}–{ci[1]:.3f} | {delta} | {m.get('macro_f1', float('nan')):.3f} | "
            f"{mel:.3f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
