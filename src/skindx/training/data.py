"""Training data: the preprocessed uint8 arrays (skindx.data.processed), memory-mapped, served
a whole batch at a time (one fancy-index read per batch instead of one per image, no JPEG
decoding), with the class-imbalance strategy of `train.imbalance`: this module is where the
class imbalance is handled (weighted loss weights come from here too, via the Trainer).
Augmentation happens on the batch, on the training device (skindx.training.augment)."""

from __future__ import annotations

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

from skindx.data.processed import SplitArrays, load_class_weights, load_split
from skindx.training.distributed import ShardedBatchSampler

# train.imbalance: weight the loss by inverse class frequency, sample classes evenly, or neither
IMBALANCE = ("weighted_loss", "sampler", "none")
__all__ = ["IMBALANCE", "SplitArrays", "check_imbalance", "load_class_weights", "load_split"]


_UNCHECKED = object()


def check_imbalance(strategy: str, class_weights: object = _UNCHECKED) -> str:
    """The one check of a `train.imbalance` value: a known strategy, and, when `class_weights`
    is passed, weights for a strategy that uses them."""
    if strategy not in IMBALANCE:
        raise ValueError(f"unknown train.imbalance {strategy!r}; expected one of {IMBALANCE}")
    if class_weights is None and strategy != "none":
        raise ValueError(
            f"train.imbalance={strategy} needs class weights (class_weights.json from the "
            "preprocess stage)"
        )
    return strategy


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
    shard: tuple[int, int] = (0, 1),
) -> DataLoader:
    """Batches of (uint8 NHWC, int64 labels). Training: shuffled (or class-balanced sampling
    with replacement when imbalance='sampler'), incomplete last batch dropped so that
    BatchNorm never sees a batch of one.

    `shard=(rank, world_size)`: `batch_size` is the global batch and this loader yields rank's
    batch_size / world_size images of each (skindx.training.distributed.ShardedBatchSampler);
    `generator` must be seeded alike on every rank."""
    check_imbalance(imbalance)
    sampler: Sampler
    if not train:
        sampler = SequentialSampler(range(len(arrays)))
    elif imbalance == "sampler":
        check_imbalance(imbalance, class_weights)
        sampler = WeightedRandomSampler(
            sample_weights(arrays.labels, class_weights),
            num_samples=len(arrays),
            replacement=True,
            generator=generator,
        )
    else:
        sampler = RandomSampler(range(len(arrays)), generator=generator)
    drop_last = train and len(arrays) > batch_size
    rank, world_size = shard
    batches: Sampler
    if world_size > 1:
        batches = ShardedBatchSampler(
            sampler, batch_size, rank=rank, world_size=world_size, drop_last=drop_last
        )
    else:
        batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(
        BatchArrayDataset(arrays),
        batch_sampler=batches,
        collate_fn=_whole_batch,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
