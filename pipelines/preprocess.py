"""DVC stage `preprocess`: lesion-grouped stratified splits, resized into uint8 arrays
(see skindx.data.preprocess); refuses data that failed validation."""

import pandas as pd

from skindx.cli import run_cli
from skindx.config import ProjectPaths, stage_params
from skindx.data.preprocess import preprocess, require_validated
from skindx.data.runlog import class_distribution_figure, log_data_run


def main() -> None:
    params = stage_params("data", "mlflow")
    data, paths = params["data"], ProjectPaths.from_params(params)
    require_validated(paths.validation_summary)
    processed, reports = paths.processed_dir, paths.preprocess_reports
    info = preprocess(paths.raw_dir, processed, reports, data)
    sizes = info["n_images"]
    print(
        "preprocess: "
        + ", ".join(f"{s} {n}" for s, n in sizes.items())
        + f" images at {info['contract']['input_size']}px -> {processed}/"
        + f" ({info['n_dropped_by_caps']} left out by the per-class caps)"
    )
    log_data_run(
        "preprocess",
        params,
        run_params={
            "image_size": data["image_size"],
            "resize_policy": data["resize_policy"],
            "split_seed": data["split"]["seed"],
            "max_per_class": data.get("max_per_class"),
            "train_max_per_class": data.get("train_max_per_class"),
        },
        metrics={
            **{f"n_{split}": n for split, n in sizes.items()},
            **{f"{split}_{dx}": n for split, c in info["counts"].items() for dx, n in c.items()},
        },
        artifacts=[
            reports / "class_counts.json",
            reports / "class_distribution.csv",
            processed / "class_weights.json",
            processed / "info.json",
        ],
        datasets={split: pd.read_csv(processed / "splits" / f"{split}.csv") for split in sizes},
        figure=class_distribution_figure(info["counts"]),
    )


if __name__ == "__main__":
    run_cli(main, "preprocess")
