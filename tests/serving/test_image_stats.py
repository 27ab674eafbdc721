"""skindx.inference.image_stats: the drift statistics match their definitions (numpy on the
pixels), react as a drift monitor needs them to (darker, colour-shifted), and refuse non-images."""

from __future__ import annotations

import numpy as np
import pytest

from skindx.inference.image_stats import HIST_KEYS, STAT_KEYS, batch_image_stats, image_stats


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)


def test_the_stats_are_their_definitions(pixels: np.ndarray):
    stats = image_stats(pixels)
    assert list(stats) == list(STAT_KEYS)
    flat = pixels.reshape(-1, 3).astype(float) / 255
    for i, c in enumerate("rgb"):
        assert stats[f"mean_{c}"] == pytest.approx(flat[:, i].mean(), abs=1e-12)
        assert stats[f"std_{c}"] == pytest.approx(flat[:, i].std(), abs=1e-9)
        counts = np.histogram(pixels[..., i], bins=8, range=(0, 256))[0] / flat.shape[0]
        np.testing.assert_allclose([stats[f"hist_{c}{b}"] for b in range(8)], counts)
    luma = flat @ np.array([0.299, 0.587, 0.114])
    assert stats["brightness"] == pytest.approx(luma.mean(), abs=1e-12)


def test_darker_and_colour_shifted_images_move_the_stats(pixels: np.ndarray):
    base = image_stats(pixels)
    darker = image_stats((pixels * 0.5).astype(np.uint8))
    assert darker["brightness"] < base["brightness"] * 0.55
    assert sum(darker[f"hist_r{b}"] for b in range(4)) == pytest.approx(1.0)  # all in the low half
    redder = pixels.copy()
    redder[..., 0] = np.minimum(redder[..., 0].astype(int) + 60, 255)
    shifted = image_stats(redder)
    assert shifted["mean_r"] > base["mean_r"] + 0.15
    assert shifted["mean_g"] == base["mean_g"]


def test_a_flat_image_and_a_batch(pixels: np.ndarray):
    flat = image_stats(np.full((32, 32, 3), 255, np.uint8))
    assert flat["std_r"] == 0 and flat["brightness"] == pytest.approx(1.0)
    assert [flat[k] for k in HIST_KEYS if k.endswith("7")] == [1.0, 1.0, 1.0]
    table = batch_image_stats(np.stack([pixels, pixels[::-1]]))
    assert table.shape == (2, len(STAT_KEYS))
    np.testing.assert_allclose(table[0], table[1])  # flipping moves no statistic


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)],
)
def test_non_rgb_uint8_input_is_refused(bad: np.ndarray):
    with pytest.raises(ValueError, match="uint8"):
        image_stats(bad)
