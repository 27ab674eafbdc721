"""Training data: the preprocessed uint8 arrays, memory-mapped, served a whole batch at a
time (one fancy-index read per batch instead of one per image, no JPEG decoding), with the
class-imbalance strategy of `train.imbalance`. Augmentation happens on the batch, on the
training device (skindx.training.augment)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
)

IMBALANCE = ("weighted_loss", "sampler", "none")


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


def load_split(processed_dir: str | Path, split: str) -> SplitArrays:
    """`{split}_images.npy` (memory-mapped) and `{split}_labels.npy` from the preprocess stage."""
    processed_dir = Path(processed_dir)
    images_path = processed_dir / f"{split}_images.npy"
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


class BatchArrayDataset(Dataset):
    """Items are (uint8 HWC tensor, label); `__getitems__` reads a whole batch at once."""

    def __init__(self, arrays: SplitArrays) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # sorted reads are sequential on a memmap
        images = np.empty((len(idx), *self.arrays.images.shape[1:]), np.uint8)
        images[order] = self.arrays.images[idx[order]]
        return torch.from_numpy(images), torch.from_numpy(self.arrays.labels[idx].copy())


def _whole_batch(batch):  # __getitems__ already returns the collated batch
    return batch


def sample_weights(labels: np.ndarray, class_weights: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(class_weights[labels], dtype=torch.double)


def make_loader(
    arrays: SplitArrays,
    batch_size: int,
    *,
    train: bool,
    imbalance: str = "none",
    class_weights: np.ndarray | None = None,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of (uint8 NHWC, int64 labels). Training: shuffled (or class-balanced sampling
    with replacement when imbalance='sampler'), incomplete last batch dropped so that
    BatchNorm never sees a batch of one."""
    if imbalance not in IMBALANCE:
        raise ValueError(f"unknown train.imbalance {imbalance!r}; expected one of {IMBALANCE}")
    sampler: Sampler
    if not train:
        sampler = SequentialSampler(range(len(arrays)))
    elif imbalance == "sampler":
        if class_weights is None:
            raise ValueError("imbalance='sampler' needs class weights")
        sampler = WeightedRandomSampler(
            sample_weights(arrays.labels, class_weights),
            num_samples=len(arrays),
            replacement=True,
            generator=generator,
        )
    else:
        sampler = RandomSampler(range(len(arrays)), generator=generator)
    drop_last = train and len(arrays) > batch_size
    return DataLoader(
        BatchArrayDataset(arrays),
        batch_sampler=BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last),
        collate_fn=_whole_batch,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
