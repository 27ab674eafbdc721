"""The parity check passes for a correct export and catches a broken one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from skindx.export.onnx import FeatureModel, export_onnx
from skindx.export.parity import ParityError, check_parity
from skindx.inference import PreprocessingContract, resize_to_contract

CONTRACT = PreprocessingContract(input_size=32)


@pytest.fixture(scope="module")
def real_images(fullres_images):
    return np.stack([resize_to_contract(Image.open(p), CONTRACT) for p in fullres_images[::5]])


class DoubleNormalised(torch.nn.Module):
    """A broken export: the graph normalises its (already normalised) input a second time."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(CONTRACT.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CONTRACT.std).view(1, 3, 1, 1))

    def forward(self, x):
        return FeatureModel(self.model)((x - self.mean) / self.std)


def test_correct_export_passes(untrained_model_factory, real_images, tmp_path):
    model = untrained_model_factory()
    path = export_onnx(model, tmp_path / "model.onnx", 32)
    report = check_parity(model, path, real_images, CONTRACT, temperature=1.5)
    assert report.n_images == len(real_images) and report.max_abs_diff <= 1e-4
    assert report.argmax_agreement == 1.0


def test_wrong_normalisation_is_caught(untrained_model_factory, real_images, tmp_path):
    model = untrained_model_factory()
    path = tmp_path / "broken.onnx"
    torch.onnx.export(
        DoubleNormalised(model).eval(),
        (torch.zeros(1, 3, 32, 32),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits", "features", "pooled"],
        dynamic_axes={n: {0: "batch"} for n in ("input", "logits", "features", "pooled")},
    )
    with pytest.raises(ParityError, match=r"does not match torch: max \|p_torch - p_onnx\|"):
        check_parity(model, path, real_images, CONTRACT)


def test_other_weights_are_caught(untrained_model_factory, real_images, tmp_path):
    path = export_onnx(untrained_model_factory(seed=1), tmp_path / "other.onnx", 32)
    with pytest.raises(ParityError):
        check_parity(untrained_model_factory(seed=0), path, real_images, CONTRACT)


def test_images_of_the_wrong_size_are_refused(untrained_model_factory, tmp_path):
    model = untrained_model_factory()
    path = export_onnx(model, tmp_path / "model.onnx", 32)
    with pytest.raises(ParityError, match=r"uint8 \(N, 32, 32, 3\)"):
        check_parity(model, path, np.zeros((2, 64, 64, 3), np.uint8), CONTRACT)
