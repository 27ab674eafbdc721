"""Stored arrays are exactly what the shared preprocessing contract computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from skindx.data.arrays import write_image_array
from skindx.data.errors import DataError
from skindx.inference.preprocessing import PreprocessingContract, resize_to_contract


@pytest.mark.parametrize("policy", ["shorter_side_center_crop", "stretch"])
def test_array_matches_resize_to_contract(fullres_images: list[Path], tmp_path: Path, policy: str):
    images = fullres_images[:9]
    contract = PreprocessingContract(input_size=48, resize_policy=policy)
    out = write_image_array(images, contract, tmp_path / "x_images.npy", progress=False)
    stored = np.load(out, mmap_mode="r")
    assert isinstance(stored, np.memmap)
    assert stored.dtype == np.uint8 and stored.shape == (9, 48, 48, 3)
    expected = np.stack([resize_to_contract(Image.open(p), contract) for p in images])
    np.testing.assert_array_equal(stored, expected)


def test_exif_orientation_is_applied_as_serving_does(tmp_path: Path):
    pixels = np.zeros((40, 64, 3), dtype=np.uint8)
    pixels[:, :16] = 255  # a bright left band: rotating the image moves it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "ISIC_0000001.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    contract = PreprocessingContract(input_size=32, resize_policy="stretch")

    out = write_image_array([path], contract, tmp_path / "x.npy", progress=False)
    with Image.open(path) as image:
        expected = resize_to_contract(ImageOps.exif_transpose(image), contract)
        raw = resize_to_contract(image, contract)
    np.testing.assert_array_equal(np.load(out)[0], expected)
    assert not np.array_equal(expected, raw)  # the tag does change the pixels


def test_empty_split_gives_an_empty_array(tmp_path: Path):
    out = write_image_array(
        [], PreprocessingContract(input_size=16), tmp_path / "e.npy", progress=False
    )
    assert np.load(out).shape == (0, 16, 16, 3)


def test_undecodable_image_is_a_data_error(fullres_images: list[Path], tmp_path: Path):
    broken = tmp_path / "ISIC_0000000.jpg"
    broken.write_bytes(fullres_images[0].read_bytes()[:500])
    with pytest.raises(DataError, match="ISIC_0000000.jpg"):
        write_image_array(
            [broken], PreprocessingContract(input_size=16), tmp_path / "b.npy", progress=False
        )
