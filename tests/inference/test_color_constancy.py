"""Colour constancy in the preprocessing contract (data.color_constancy=shades_of_gray): what
it does to pixels, that it is part of the contract's identity, and that a package built with it
is served with it: the API's answer for an upload is the model's answer on the
shades-of-gray pixels, not on the raw ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from skindx.inference.preprocessing import (
    PreprocessingContract,
    crop_and_resize,
    resize_to_contract,
    shades_of_gray,
)

SOG = PreprocessingContract(input_size=32, color_constancy="shades_of_gray")


def _lesion(seed: int = 0, size: int = 64) -> np.ndarray:
    """A skin-toned image with a darker blob and noise (uint8 H x W x 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-(((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2)))
    skin = np.array([200.0, 140.0, 145.0])
    image = skin * (1 - 0.6 * blob[..., None]) + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _power_means(pixels: np.ndarray, p: float = 6.0) -> np.ndarray:
    return np.mean(pixels.astype(np.float64) ** p, axis=(0, 1)) ** (1 / p)


def test_each_channels_power_mean_becomes_the_same():
    out = shades_of_gray(_lesion())
    means = _power_means(out)
    assert means.max() - means.min() < 1.5  # equal up to uint8 rounding
    assert np.ptp(_power_means(_lesion())) > 30  # and they were not before


def test_a_global_colour_cast_is_removed():
    """The same scene under a bluish and a reddish light comes out (nearly) the same."""
    scene = _lesion(1).astype(np.float64)
    bluish = np.clip(scene * [0.80, 0.95, 1.15], 0, 255).astype(np.uint8)
    reddish = np.clip(scene * [1.10, 0.90, 0.85], 0, 255).astype(np.uint8)
    raw_gap = np.abs(bluish.astype(int) - reddish.astype(int)).mean()
    gap = np.abs(shades_of_gray(bluish).astype(int) - shades_of_gray(reddish).astype(int)).mean()
    assert raw_gap > 20 and gap < 3


def test_grey_and_black_images_are_left_alone_and_batches_work_per_image():
    grey = np.full((16, 16, 3), 128, np.uint8)
    black = np.zeros((16, 16, 3), np.uint8)
    np.testing.assert_array_equal(shades_of_gray(grey), grey)
    np.testing.assert_array_equal(shades_of_gray(black), black)
    batch = np.stack([_lesion(2, 16), grey])
    np.testing.assert_array_equal(shades_of_gray(batch)[0], shades_of_gray(batch[0]))
    np.testing.assert_array_equal(shades_of_gray(batch)[1], grey)


def test_the_contract_applies_it_after_the_crop_and_records_it():
    image = Image.fromarray(_lesion(3, 80)).crop((0, 0, 80, 60))
    pixels = resize_to_contract(image, SOG)
    np.testing.assert_array_equal(pixels, shades_of_gray(crop_and_resize(image, SOG)))
    assert not np.array_equal(pixels, resize_to_contract(image, PreprocessingContract(32)))
    # part of the contract: a package trained without it is not the same contract
    assert SOG != PreprocessingContract(32)
    assert PreprocessingContract.from_dict(SOG.to_dict()) == SOG
    old_card = {k: v for k, v in PreprocessingContract(32).to_dict().items() if "color" not in k}
    assert PreprocessingContract.from_dict(old_card) == PreprocessingContract(32)  # older cards
    built = PreprocessingContract.from_data_params(
        {"image_size": 32, "color_constancy": "shades_of_gray", "color_constancy_power": 4}
    )
    assert built.color_constancy == "shades_of_gray" and built.color_constancy_power == 4.0


def test_unknown_settings_say_what_is_allowed():
    with pytest.raises(ValueError, match="expected one of"):
        PreprocessingContract(32, color_constancy="grey_edge")
    with pytest.raises(ValueError, match="at least 1"):
        PreprocessingContract(32, color_constancy="shades_of_gray", color_constancy_power=0.5)


@pytest.mark.slow
def test_a_package_with_it_is_served_with_it(untrained_model_factory, tmp_path):
    from skindx.export.package import build_package
    from skindx.inference.model import load_packaged_model
    from tests.serving.conftest import in_process_api

    out = build_package(untrained_model_factory(), SOG, tmp_path / "pkg")
    model = load_packaged_model(out)
    assert model.contract == SOG
    image = Image.fromarray(_lesion(4, 96)).crop((0, 0, 96, 72))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # lossless: the API decodes the same pixels
    with in_process_api(model_dir=out) as api:
        answer = api.test_client.post("/predict", files={"file": ("l.png", buffer.getvalue())})
    assert answer.status_code == 200, answer.text
    served = np.array([p["probability"] for p in answer.json()["probabilities"]])
    expected, _ = model.predict(resize_to_contract(image, SOG)[None])
    raw, _ = model.predict(crop_and_resize(image, SOG)[None])
    np.testing.assert_allclose(served, expected[0], atol=1e-5)
    assert np.abs(served - raw[0]).max() > 1e-4  # it would differ without the correction
