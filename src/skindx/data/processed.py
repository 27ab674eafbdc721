"""Reading what the preprocess stage wrote (docs/contracts.md, `paths.processed_dir`): the split
arrays, the class weights and the preprocessing contract. Used by training, evaluation and
export; numpy only, so nothing here needs torch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skindx.inference.preprocessing import PreprocessingContract


@dataclass(frozen=True)
class SplitArrays:
    images: np.ndarray  # uint8 (N, S, S, 3), usually memory-mapped
    labels: np.ndarray  # int64 (N,)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 (N, S, S, 3) images, got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


def split_images_path(processed_dir: str | Path, split: str) -> Path:
    return Path(processed_dir) / f"{split}_images.npy"


def load_split(processed_dir: str | Path, split: str) -> SplitArrays:
    """`{split}_images.npy` (memory-mapped) and `{split}_labels.npy` from the preprocess stage."""
    processed_dir = Path(processed_dir)
    images_path = split_images_path(processed_dir, split)
    labels_path = processed_dir / f"{split}_labels.npy"
    for path in (images_path, labels_path):
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: run the preprocess stage first (dvc repro preprocess)"
            )
    labels = np.load(labels_path).astype(np.int64, copy=False)
    return SplitArrays(np.load(images_path, mmap_mode="r"), labels)


def load_class_weights(processed_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """(classes, weights) from class_weights.json: inverse train frequency, mean 1."""
    data = json.loads((Path(processed_dir) / "class_weights.json").read_text())
    return list(data["classes"]), np.asarray(data["weights"], dtype=np.float32)


def read_contract(processed_dir: str | Path) -> PreprocessingContract:
    """The contract the arrays were made with (info.json's `contract`, written by preprocess)."""
    info_path = Path(processed_dir) / "info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if not isinstance(info.get("contract"), dict):
        raise FileNotFoundError(
            f"{info_path} has no preprocessing contract: rerun the preprocess stage "
            "(dvc repro preprocess)"
        )
    return PreprocessingContract.from_dict(info["contract"])
