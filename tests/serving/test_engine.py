"""InferenceEngine in-process: real ONNX packages, real batching, reload semantics."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.engine import InferenceEngine, ModelNotReadyError, ModelRejectedError
from serving.metrics import ServingMetrics
from serving.settings import Settings
from skindx.export.card import write_card
from skindx.inference import resize_to_contract
from skindx.inference.model import load_packaged_model
from tests.serving.conftest import copy_package


@pytest.fixture(scope="module")
def photo(synthetic_jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(synthetic_jpeg)).convert("RGB")


def engine_for(model_dir: Path, **settings) -> InferenceEngine:
    options = {"max_batch": 4, "max_wait_ms": 1.0, "intra_op_threads": 1} | settings
    return InferenceEngine(Settings(model_dir=model_dir, **options), ServingMetrics())


def expected_probabilities(model_dir: Path, image: Image.Image) -> np.ndarray:
    model = load_packaged_model(model_dir)
    return model.predict(resize_to_contract(image, model.contract)[None])[0][0]


def test_predictions_match_the_package(packaged_model_dir: Path, photo: Image.Image):
    async def scenario():
        engine = engine_for(packaged_model_dir)
        await engine.start()
        assert not engine.ready
        with pytest.raises(ModelNotReadyError, match="loading"):
            engine.prepare(photo)
        assert await engine.load() == (None, "test-1")
        results = await engine.infer_many([engine.prepare(photo)] * 3)
        await engine.close()
        return results

    results = asyncio.run(scenario())
    expected = expected_probabilities(packaged_model_dir, photo)
    for result in results:
        np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
        assert result.model.version == "test-1"
        assert result.features.shape[0] == 512  # resnet18 layer4 channels


def test_a_request_prepared_before_a_reload_runs_on_the_new_model(
    packaged_model_dir: Path, packaged_model_dir_64: Path, photo: Image.Image
):
    """The reload changes the input size (32 -> 64 px); an item resized for the old model is
    resized again for the new one instead of failing."""

    async def scenario():
        engine = engine_for(packaged_model_dir)
        await engine.start()
        await engine.load()
        item = engine.prepare(photo)
        assert item.pixels.shape == (32, 32, 3)
        assert await engine.load(packaged_model_dir_64) == ("test-1", "test-2-64px")
        result = await engine.infer(item)
        await engine.close()
        return result

    result = asyncio.run(scenario())
    assert result.model.version == "test-2-64px"
    np.testing.assert_allclose(
        result.probabilities, expected_probabilities(packaged_model_dir_64, photo), atol=1e-6
    )


def test_a_tampered_model_is_refused_and_the_old_one_kept(
    packaged_model_dir: Path, tmp_path: Path, photo: Image.Image
):
    tampered = copy_package(packaged_model_dir, tmp_path / "tampered", version="evil")
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "model.onnx").write_bytes(bytes(data))

    async def scenario():
        engine = engine_for(packaged_model_dir)
        await engine.start()
        await engine.load()
        with pytest.raises(ModelRejectedError, match="sha256"):
            await engine.load(tampered)
        result = await engine.infer(engine.prepare(photo))
        refused = engine.metrics.reloads.labels(result="refused")._value.get()
        await engine.close()
        return result, refused

    result, refused = asyncio.run(scenario())
    assert result.model.version == "test-1"
    assert refused == 1


def test_a_failed_first_load_is_reported_by_readiness(tmp_path: Path):
    async def scenario():
        engine = engine_for(tmp_path / "missing")
        await engine.start()
        with pytest.raises(ModelRejectedError):
            await engine.load()
        await engine.close()
        return engine

    engine = asyncio.run(scenario())
    assert not engine.ready
    with pytest.raises(ModelNotReadyError, match="loading it failed: .*model.json"):
        _ = engine.model


def test_a_queued_request_keeps_a_bounded_copy_of_a_large_upload(packaged_model_dir: Path):
    """A 4000x3000 upload is resized by the exact contract, but the item only keeps a copy of
    at most KEPT_IMAGE_SIDE (memory per queued request stays small)."""
    from serving.engine import KEPT_IMAGE_SIDE

    rng = np.random.default_rng(0)
    large = Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8), "RGB")

    async def scenario():
        engine = engine_for(packaged_model_dir)
        await engine.start()
        await engine.load()
        item = engine.prepare(large)
        await engine.close()
        return item, engine

    item, engine = asyncio.run(scenario())
    assert max(item.image.size) == KEPT_IMAGE_SIDE
    np.testing.assert_array_equal(item.pixels, resize_to_contract(large, item.contract))


def test_a_model_with_other_classes_is_refused(packaged_model_dir: Path, tmp_path: Path):
    import json

    model_dir = copy_package(packaged_model_dir, tmp_path / "reordered")
    card = json.loads((model_dir / "model.json").read_text())
    card["classes"] = card["classes"][::-1]
    write_card(card, model_dir)

    async def scenario():
        engine = engine_for(model_dir)
        await engine.start()
        try:
            with pytest.raises(ModelRejectedError, match="not SkinDX's"):
                await engine.load()
        finally:
            await engine.close()

    asyncio.run(scenario())
