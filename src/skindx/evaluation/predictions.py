"""Per-image test predictions: what evaluate writes and promote's paired test reads.

`predictions.csv` (in `paths.plots_dir`, and copied into every package so that a champion's
predictions travel with it, sealed by the card's sha256 list) has one row per test image in
array order: `image_id, lesion_id, dx, label, predicted`, then `prob_<code>` for each class
(calibrated with the package's temperature, printed with `repr` so they read back exactly).
Plain CSV: readable by people and by any tool, and nothing to unpickle.

Numpy and the csv module only (the registry reads these files without torch).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREDICTIONS_FILE = "predictions.csv"
PROB_PREFIX = "prob_"
ID_COLUMNS = ("image_id", "lesion_id", "dx", "label", "predicted")


@dataclass(frozen=True)
class Predictions:
    image_ids: list[str]
    lesion_ids: list[str]
    labels: np.ndarray  # int64 (N,)
    probs: np.ndarray  # float64 (N, C)
    classes: list[str]

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.image_ids)

    def align(self, other: Predictions) -> tuple[Predictions, Predictions] | str:
        """Both restricted to the same images in the same order (matched by image id), or a
        sentence saying why they cannot be compared."""
        if list(other.classes) != list(self.classes):
            return f"the classes differ ({other.classes} vs {self.classes})"
        mine, theirs = set(self.image_ids), set(other.image_ids)
        if len(mine) != len(self) or len(theirs) != len(other):
            return "an image id appears twice in a predictions file"
        if mine != theirs:
            return (
                f"they are on different test images ({len(mine & theirs)} shared, "
                f"{len(mine - theirs)} only in the candidate's, {len(theirs - mine)} only in "
                "the champion's)"
            )
        order = {image_id: i for i, image_id in enumerate(other.image_ids)}
        picks = np.asarray([order[i] for i in self.image_ids], dtype=np.int64)
        if not np.array_equal(other.labels[picks], self.labels):
            return "the same image ids carry different labels"
        return self, other.take(picks)

    def take(self, index: np.ndarray) -> Predictions:
        return Predictions(
            [self.image_ids[i] for i in index],
            [self.lesion_ids[i] for i in index],
            self.labels[index],
            self.probs[index],
            self.classes,
        )


def read_split_table(processed_dir: str | Path, split: str) -> list[dict[str, str]]:
    """`splits/{split}.csv` of the preprocess stage (image_id, lesion_id, dx, label; in array
    order)."""
    path = Path(processed_dir) / "splits" / f"{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: rerun the preprocess stage (dvc repro preprocess); evaluate "
            "needs each test image's lesion_id to resample by lesion"
        )
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_predictions(
    path: str | Path,
    *,
    image_ids: Sequence[str],
    lesion_ids: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
) -> Path:
    """Write atomically (a reader never sees half a file)."""
    path = Path(path)
    labels, probs = np.asarray(labels, np.int64), np.asarray(probs, np.float64)
    if not len(image_ids) == len(lesion_ids) == len(labels) == len(probs):
        raise ValueError(
            f"{len(image_ids)} image ids, {len(lesion_ids)} lesion ids, {len(labels)} labels and "
            f"{len(probs)} predictions: the split table does not match the split arrays; rerun "
            "the preprocess stage"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*ID_COLUMNS, *(f"{PROB_PREFIX}{c}" for c in classes)])
        for i, row in enumerate(probs):
            writer.writerow(
                [
                    image_ids[i],
                    lesion_ids[i],
                    classes[labels[i]],
                    int(labels[i]),
                    int(row.argmax()),
                    *(repr(float(p)) for p in row),
                ]
            )
    os.replace(tmp, path)
    return path


def read_predictions(path: str | Path) -> Predictions:
    """Raises ValueError naming the problem if the file is not a predictions file."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        rows = list(reader)
    if not header or tuple(header[: len(ID_COLUMNS)]) != ID_COLUMNS:
        raise ValueError(f"{path} is not a predictions file (header {header})")
    prob_columns = header[len(ID_COLUMNS) :]
    if not prob_columns or not all(c.startswith(PROB_PREFIX) for c in prob_columns):
        raise ValueError(f"{path} has no {PROB_PREFIX}<class> columns")
    try:
        probs = np.asarray([[float(v) for v in r[len(ID_COLUMNS) :]] for r in rows], np.float64)
        labels = np.asarray([int(r[3]) for r in rows], np.int64)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{path} has a malformed row: {exc}") from exc
    return Predictions(
        image_ids=[r[0] for r in rows],
        lesion_ids=[r[1] for r in rows],
        labels=labels,
        probs=probs.reshape(len(rows), len(prob_columns)),
        classes=[c[len(PROB_PREFIX) :] for c in prob_columns],
    )
