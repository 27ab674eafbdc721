"""JPEG draft decoding in the preprocessing contract (data.jpeg_draft): the decoder's DCT-domain
scale that the contract picks, that it is part of the contract's identity, that the preprocess
stage and the API compute the same pixels with it, and that /explain keeps a full-resolution
background while classifying the draft's pixels."""

from __future__ import annotations

import base64
import io

import anyio
import numpy as np
import pytest
from PIL import Image

from skindx.data.arrays import load_resized
from skindx.inference.images import ImageDecodeError, decode_image, full_view
from skindx.inference.preprocessing import PreprocessingContract, apply_draft, resize_to_contract

DRAFT = PreprocessingContract(input_size=64, jpeg_draft=True)
FULL = PreprocessingContract(input_size=64)


def _lesion_jpeg(width: int = 600, height: int = 450, seed: int = 0, quality: int = 90) -> bytes:
    """A skin-toned JPEG with a dark textured blob: detail at every scale, as a photo has."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    blob = np.exp(-(((yy - height / 2) ** 2 + (xx - width / 2) ** 2) / (2 * (height / 5) ** 2)))
    texture = rng.normal(0, 12, (height, width, 1))
    image = np.array([205.0, 150.0, 140.0]) * (1 - 0.55 * blob[..., None]) + texture
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("size", "stored", "decoded"),
    [
        (64, (600, 450), (150, 113)),  # 1/4: 1/8 would leave 57 rows, under 64
        (224, (600, 450), (300, 225)),  # 1/2
        (64, (200, 150), (100, 75)),  # HAM10000's images here: 1/2
        (300, (600, 450), (600, 450)),  # no smaller scale keeps 300 rows: the full decode
    ],
)
def test_the_decoder_scale_is_the_smallest_that_keeps_input_size(size, stored, decoded):
    contract = PreprocessingContract(input_size=size, jpeg_draft=True)
    with Image.open(io.BytesIO(_lesion_jpeg(*stored))) as image:
        reduced = apply_draft(image, contract)
        image.load()
        assert image.size == decoded
    assert reduced == (decoded != stored)


def test_off_png_and_loaded_images_are_decoded_in_full():
    data = _lesion_jpeg()
    with Image.open(io.BytesIO(data)) as image:
        assert not apply_draft(image, FULL)
        assert image.size == (600, 450)
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, "PNG")
    with Image.open(png) as image:
        assert not apply_draft(image, DRAFT) and image.size == (600, 450)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert not apply_draft(image, DRAFT) and image.size == (600, 450)


def test_it_is_part_of_the_contract():
    assert DRAFT != FULL
    assert PreprocessingContract.from_dict(DRAFT.to_dict()) == DRAFT
    old_card = {k: v for k, v in FULL.to_dict().items() if k != "jpeg_draft"}
    assert PreprocessingContract.from_dict(old_card) == FULL  # cards written before it
    assert PreprocessingContract.from_data_params({"image_size": 64, "jpeg_draft": True}) == DRAFT
    assert PreprocessingContract.from_data_params({"image_size": 64}) == FULL


def test_training_and_serving_compute_the_same_pixels(tmp_path):
    """The preprocess stage (load_resized on a file) and the API (decode_image on the upload's
    bytes under the model's contract) decode the same reduced image: identical model inputs.
    And they are really the draft's: not the full decode's, though close to it."""
    data = _lesion_jpeg()
    path = tmp_path / "upload.jpg"
    path.write_bytes(data)
    trained = load_resized(path, DRAFT)
    upload = decode_image(data, contract=DRAFT)
    assert upload.drafted and upload.image.size == (150, 113)
    assert upload.source_size == (600, 450)  # the facts logged are of the file as sent
    np.testing.assert_array_equal(trained, resize_to_contract(upload.image, DRAFT))

    full = load_resized(path, FULL)
    assert not decode_image(data, contract=FULL).drafted
    difference = np.abs(trained.astype(int) - full.astype(int))
    assert difference.max() > 0  # a different decode ...
    assert difference.mean() < 3  # ... of the same picture


def test_a_view_for_people_is_decoded_again_only_when_the_draft_made_it_too_small():
    data = _lesion_jpeg()
    full = decode_image(data, contract=FULL)
    assert full_view(full, data, 448) is full.image  # not drafted: the same image, no decode
    drafted = decode_image(data, contract=DRAFT)  # 150 x 113
    assert full_view(drafted, data, 448).size == (600, 450)
    assert full_view(drafted, data, 100) is drafted.image  # large enough for a 100 px view


def test_the_limits_apply_to_the_file_as_stored():
    data = _lesion_jpeg()
    with pytest.raises(ImageDecodeError) as refused:
        decode_image(data, max_pixels=100_000, contract=DRAFT)  # 270,000 stored, 16,950 drafted
    assert refused.value.status_code == 413


@pytest.mark.slow
def test_the_api_classifies_the_draft_and_explains_on_the_full_image(
    untrained_model_factory, tmp_path
):
    from skindx.export.package import build_package
    from skindx.inference.model import load_packaged_model
    from tests.serving.conftest import in_process_api

    out = build_package(untrained_model_factory(), DRAFT, tmp_path / "pkg")
    model = load_packaged_model(out)
    assert model.contract == DRAFT
    data = _lesion_jpeg(seed=3)
    with in_process_api(model_dir=out) as api:
        answer = api.test_client.post("/predict", files={"file": ("l.jpg", data)})
        explained = api.test_client.post("/explain", files={"file": ("l.jpg", data)})
        app = api.app
        # what /explain decodes: the draft's pixels for the model, the full image as background
        item = anyio.run(_decode, data, app, 448)
        plain = anyio.run(_decode, data, app, None)
    assert answer.status_code == 200, answer.text
    served = np.array([p["probability"] for p in answer.json()["probabilities"]])
    draft_pixels = resize_to_contract(decode_image(data, contract=DRAFT).image, DRAFT)
    expected, _ = model.predict(draft_pixels[None])
    np.testing.assert_allclose(served, expected[0], atol=1e-5)

    np.testing.assert_array_equal(item.pixels, draft_pixels)
    assert item.image.size == (600, 450)  # the overlay's background: the full decode
    np.testing.assert_array_equal(plain.pixels, draft_pixels)
    assert plain.image.size == (150, 113)  # /predict: one decode, the draft's

    assert explained.status_code == 200, explained.text
    body = explained.json()
    np.testing.assert_allclose(
        [p["probability"] for p in body["probabilities"]], served, atol=1e-5
    )  # the overlay's full decode does not change what is classified
    png = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"])))
    assert png.size == (448, 448)


async def _decode(data: bytes, app, view_side: int | None):
    from serving.uploads import decode

    upload = await decode(
        data, app.state.settings, app.state.engine, anyio.CapacityLimiter(1), view_side
    )
    return upload.item
