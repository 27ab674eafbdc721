"""The monitor's reference: the test split as the model saw it, saved at package time.

`reference.csv` (one row per test image, in array order: `image_id`, then
skindx.inference.image_stats.STAT_KEYS) is computed by the same `image_stats` function the API
applies to each upload's model input, on data/processed/test_images.npy (the same contract
crop and resize), so reference and log are comparable. The package stage copies it into the
package, where the card's sha256 list seals it. The reference class mix is the package's
predictions.csv (evaluate's test predictions): no second copy of them here.

numpy, pandas and the csv module only (the package stage imports this without Evidently).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from skindx.inference.classes import CLASS_CODES
from skindx.inference.image_stats import STAT_KEYS, batch_image_stats

REFERENCE_FILE = "reference.csv"
PREDICTIONS_FILE = "predictions.csv"  # skindx.evaluation.predictions.PREDICTIONS_FILE


class ReferenceError(FileNotFoundError):
    """The package holds no (usable) reference; the message says how to get one."""


def write_reference(path: str | Path, image_ids: Sequence[str], images: np.ndarray) -> Path:
    """Write the reference of `images` (uint8 N×S×S×3, the test split) atomically."""
    path = Path(path)
    if len(image_ids) != len(images):
        raise ValueError(
            f"{len(image_ids)} image ids for {len(images)} test images: the split table does "
            "not match the split arrays; rerun the preprocess stage"
        )
    frame = pd.DataFrame(batch_image_stats(np.asarray(images)), columns=list(STAT_KEYS))
    frame.insert(0, "image_id", list(image_ids))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.8g")
    os.replace(tmp, path)
    return path


def load_reference(package_dir: str | Path) -> pd.DataFrame:
    """The reference of a package: `image_id`, the STAT_KEYS and, when the package holds
    evaluate's predictions.csv, `predicted_class` and `label` (class codes)."""
    package_dir = Path(package_dir)
    path = package_dir / REFERENCE_FILE
    if not path.is_file():
        raise ReferenceError(
            f"{path} not found: this package was built before the monitor's reference existed; "
            "rebuild and promote it (dvc repro package promote), or pass --model-dir with a "
            "package that has one"
        )
    frame = pd.read_csv(path, dtype={"image_id": str})
    missing = [key for key in STAT_KEYS if key not in frame.columns]
    if missing:
        raise ReferenceError(f"{path} lacks the statistics {missing}: rebuild the package")
    predictions = package_dir / PREDICTIONS_FILE
    if predictions.is_file():
        from skindx.evaluation.predictions import read_predictions

        preds = read_predictions(predictions)
        codes = list(preds.classes) or list(CLASS_CODES)
        by_id = pd.DataFrame(
            {
                "image_id": preds.image_ids,
                "predicted_class": [codes[i] for i in preds.predicted],
                "label": [codes[i] for i in preds.labels],
            }
        )
        frame = frame.merge(by_id, on="image_id", how="left")
    return frame
