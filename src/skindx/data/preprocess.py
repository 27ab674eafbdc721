"""Preprocess: validated `data/raw/` -> lesion-grouped splits as uint8 arrays + reports.

Writes (paths per docs/contracts.md) `{split}_images.npy`, `{split}_labels.npy`,
`splits/{split}.csv`, `class_weights.json`, `info.json` under `processed_dir`, and
`class_counts.json` + `class_distribution.csv` under `reports_dir`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skindx.data.arrays import write_image_array
from skindx.data.errors import DataError
from skindx.data.ingest import read_manifest, read_metadata
from skindx.data.splits import (
    SPLITS,
    assign_splits,
    cap_by_lesion,
    class_counts,
    class_weights,
    split_fractions,
    train_only,
)
from skindx.inference.preprocessing import PreprocessingContract

SPLIT_COLUMNS = ["image_id", "lesion_id", "dx", "label"]


def require_validated(summary_path: Path) -> None:
    try:
        summary = json.loads(Path(summary_path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{summary_path} is missing or unreadable: run the validate stage first"
        ) from exc
    if not summary.get("success"):
        names = [f.get("description", f.get("expectation")) for f in summary.get("failed", [])]
        raise DataError(f"validation failed ({'; '.join(names)}); see {summary_path}")


def make_splits(meta: pd.DataFrame, data_params: Mapping[str, Any]) -> pd.DataFrame:
    """Cap, split and cap train; returns the kept rows with `split` and `label` columns.

    Train-only rows (reviewed cases, `splits.train_only`) skip the caps and the split: they
    join the training split, so validation and test are the same with or without them."""
    classes = list(data_params["classes"])
    unknown = sorted(set(meta["dx"].astype(str)) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not in data.classes {classes}")
    split_params = data_params.get("split", {})
    seed = int(split_params.get("seed", 42))
    extra = train_only(meta)
    rows = cap_by_lesion(meta[~extra], data_params.get("max_per_class"), seed)
    rows = rows.assign(split=assign_splits(rows, split_fractions(split_params), seed))
    train_cap = data_params.get("train_max_per_class")
    if train_cap is not None:
        train = cap_by_lesion(rows[rows["split"] == "train"], train_cap, seed)
        rows = pd.concat([train, rows[rows["split"] != "train"]])
    if extra.any():
        rows = pd.concat([rows, meta[extra].assign(split="train")])
    rows = rows.assign(label=rows["dx"].map({c: i for i, c in enumerate(classes)}).astype("int64"))
    return rows.sort_values(["split", "image_id"], kind="stable")


def preprocess(
    raw_dir: Path,
    processed_dir: Path,
    reports_dir: Path,
    data_params: Mapping[str, Any],
    *,
    progress: bool = True,
) -> dict[str, Any]:
    raw_dir, processed_dir, reports_dir = Path(raw_dir), Path(processed_dir), Path(reports_dir)
    classes = list(data_params["classes"])
    contract = PreprocessingContract.from_data_params(dict(data_params))
    meta = read_metadata(raw_dir)
    rows = make_splits(meta, data_params)

    (processed_dir / "splits").mkdir(parents=True, exist_ok=True)
    reports_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        part = rows[rows["split"] == split]
        part[SPLIT_COLUMNS].to_csv(processed_dir / "splits" / f"{split}.csv", index=False)
        np.save(processed_dir / f"{split}_labels.npy", part["label"].to_numpy(np.int64))
        write_image_array(
            [raw_dir / p for p in part["path"]],
            contract,
            processed_dir / f"{split}_images.npy",
            progress=progress,
            desc=f"preprocess: resizing {split}",
        )
        counts[split] = class_counts(part, classes)

    train = rows[rows["split"] == "train"]
    weights = {"classes": classes, "weights": class_weights(train, classes)}
    (processed_dir / "class_weights.json").write_text(json.dumps(weights, indent=2) + "\n")
    sizes = {split: sum(c.values()) for split, c in counts.items()}
    info = {
        "contract": contract.to_dict(),
        "classes": classes,
        "counts": counts,
        "n_images": sizes,
        "n_raw_images": len(meta),
        "n_dropped_by_caps": len(meta) - len(rows),
        "n_train_only": int(train_only(rows).sum()),  # reviewed cases added to train
        "split": dict(data_params.get("split", {})),
        "max_per_class": data_params.get("max_per_class"),
        "train_max_per_class": data_params.get("train_max_per_class"),
        "data_hash": read_manifest(raw_dir).get("data_hash"),
    }
    (processed_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")

    (reports_dir / "class_counts.json").write_text(
        json.dumps({**counts, "n_images": sizes}, indent=2) + "\n"
    )
    pd.DataFrame(
        [(s, c, n) for s, per_class in counts.items() for c, n in per_class.items()],
        columns=["split", "dx", "count"],
    ).to_csv(reports_dir / "class_distribution.csv", index=False)
    return info
