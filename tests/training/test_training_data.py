"""Training data: memory-mapped splits, batch loading, imbalance sampling, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skindx.inference import PreprocessingContract, normalize
from skindx.training.augment import AugmentConfig, BatchTransform
from skindx.training.data import SplitArrays, load_class_weights, load_split, make_loader

CONTRACT = PreprocessingContract(input_size=32)
NO_AUGMENT = AugmentConfig(
    hflip=False, vflip=False, rot90=False, random_resized_crop_scale=None, color_jitter=0.0
)


def test_load_split_is_memory_mapped(processed_dir):
    split = load_split(processed_dir, "train")
    assert isinstance(split.images, np.memmap)
    assert split.images.dtype == np.uint8 and split.images.shape[1:] == (32, 32, 3)
    assert split.labels.dtype == np.int64 and len(split) == len(split.images)


def test_missing_split_says_to_run_preprocess(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocess"):
        load_split(tmp_path, "train")


def test_class_weights(processed_dir):
    classes, weights = load_class_weights(processed_dir)
    assert len(classes) == len(weights) == 7
    assert weights.mean() == pytest.approx(1.0)


def test_loader_batches(processed_dir):
    split = load_split(processed_dir, "train")
    gen = torch.Generator().manual_seed(0)
    batches = list(make_loader(split, 16, train=True, generator=gen))
    assert len(batches) == len(split) // 16  # incomplete last batch dropped
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (16, 32, 32, 3)
    assert labels.dtype == torch.int64 and labels.shape == (16,)
    # evaluation order is the stored order, every image once
    eval_batches = list(make_loader(split, 16, train=False))
    assert torch.equal(torch.cat([b[1] for b in eval_batches]), torch.from_numpy(split.labels))
    assert np.array_equal(torch.cat([b[0] for b in eval_batches]).numpy(), np.asarray(split.images))


def test_loader_shuffle_follows_the_generator(processed_dir):
    split = load_split(processed_dir, "train")

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([b[1] for b in make_loader(split, 8, train=True, generator=gen)])

    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))


def test_sampler_balances_classes():
    labels = np.array([0] * 90 + [1] * 10, dtype=np.int64)
    split = SplitArrays(np.zeros((100, 8, 8, 3), np.uint8), labels)
    counts = np.bincount(labels, minlength=2)
    weights = (1 / counts) / (1 / counts).mean()
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat(
        [
            b[1]
            for _ in range(20)
            for b in make_loader(
                split, 10, train=True, imbalance="sampler", class_weights=weights, generator=gen
            )
        ]
    )
    share_minority = (drawn == 1).float().mean().item()
    assert 0.4 < share_minority < 0.6  # 0.1 without the sampler


def test_unknown_imbalance_is_rejected(processed_dir):
    with pytest.raises(ValueError, match="imbalance"):
        make_loader(load_split(processed_dir, "train"), 8, train=True, imbalance="smote")


@pytest.fixture(scope="module")
def batch(processed_dir) -> torch.Tensor:
    return torch.from_numpy(np.array(load_split(processed_dir, "train").images[:12]))


def test_eval_mode_is_exactly_the_contract_normalisation(batch):
    transform = BatchTransform(CONTRACT, AugmentConfig(), channels_last=True)
    out = transform(batch, train=False, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (12, 3, 32, 32)
    assert out.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(out.numpy(), normalize(batch.numpy(), CONTRACT), atol=1e-6)


def test_train_mode_augments_reproducibly(batch):
    transform = BatchTransform(CONTRACT, AugmentConfig())
    a = transform(batch, train=True, generator=torch.Generator().manual_seed(5))
    b = transform(batch, train=True, generator=torch.Generator().manual_seed(5))
    c = transform(batch, train=True, generator=torch.Generator().manual_seed(6))
    plain = transform(batch, train=False)
    assert a.shape == plain.shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, plain)
    # pixel values stay in the image range [0, 1] before normalisation
    mean = torch.tensor(CONTRACT.mean).view(1, 3, 1, 1)
    std = torch.tensor(CONTRACT.std).view(1, 3, 1, 1)
    pixels = a * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def _candidates(image: torch.Tensor, ops) -> list[torch.Tensor]:
    return [op(image) for op in ops]


def _only(flag: str) -> AugmentConfig:
    """One geometric augmentation on, everything else off."""
    flags = dict.fromkeys(("hflip", "vflip", "rot90"), False)
    return AugmentConfig(**{**flags, flag: True}, random_resized_crop_scale=None, color_jitter=0.0)


@pytest.mark.parametrize(
    ("config", "ops"),
    [
        (_only("hflip"), [lambda x: x, lambda x: x.flip(-1)]),
        (_only("vflip"), [lambda x: x, lambda x: x.flip(-2)]),
        (_only("rot90"), [lambda x, k=k: torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]),
    ],
    ids=["hflip", "vflip", "rot90"],
)
def test_flips_and_rotations_are_exact(batch, config, ops):
    plain = BatchTransform(CONTRACT, NO_AUGMENT)(batch, train=False)
    out = BatchTransform(CONTRACT, config)(
        batch, train=True, generator=torch.Generator().manual_seed(0)
    )
    used = set()
    for i in range(len(batch)):
        matches = [
            j
            for j, cand in enumerate(_candidates(plain[i], ops))
            if torch.allclose(out[i], cand, atol=1e-5)
        ]
        assert matches, f"image {i} is not an exact flip/rotation of the input"
        used.add(matches[0])
    assert len(used) > 1  # the random choice does vary over a batch


def test_augment_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown train.augment"):
        AugmentConfig.from_params({"mixup": 0.2})
    cfg = AugmentConfig.from_params({"random_resized_crop_scale": [0.5, 1.0], "color_jitter": 0})
    assert cfg.random_resized_crop_scale == (0.5, 1.0) and cfg.color_jitter == 0
