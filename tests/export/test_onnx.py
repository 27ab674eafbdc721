"""ONNX export: two outputs (logits, layer4 features), dynamic batch, opset >= 17, one file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from skindx.export.onnx import ExportError, FeatureModel, export_onnx, onnx_opset
from skindx.inference.model import create_session


def test_feature_model_returns_the_models_logits_and_layer4(untrained_model_factory):
    model = untrained_model_factory()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, features, _ = FeatureModel(model)(x)
        np.testing.assert_allclose(logits.numpy(), model(x).numpy(), atol=1e-5)
    assert features.shape == (2, 512, 2, 2)


def test_export_is_one_file_with_dynamic_batch_and_both_outputs(untrained_model_factory, tmp_path):
    model = untrained_model_factory()
    path = export_onnx(model, tmp_path / "model.onnx", input_size=32, opset=17)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no external data
    proto = onnx.load(str(path))
    assert onnx_opset(path) == 17
    assert [o.name for o in proto.graph.output] == ["logits", "features", "pooled"]
    session = create_session(path, threads=1)
    for batch in (1, 5):  # exported with a batch of 2
        x = torch.randn(batch, 3, 32, 32)
        logits, features, pooled = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            ref_logits, ref_features, ref_pooled = FeatureModel(model)(x)
        np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4)
        np.testing.assert_allclose(features, ref_features.numpy(), atol=1e-4)
        # each stage's global average pool (64 + 128 + 256 + 512 channels), layer4's last
        assert pooled.shape == (batch, 960)
        np.testing.assert_allclose(pooled, ref_pooled.numpy(), atol=1e-4)
        np.testing.assert_allclose(pooled[:, -512:], features.mean(axis=(2, 3)), atol=1e-5)


def test_opset_below_17_is_refused(untrained_model_factory, tmp_path):
    with pytest.raises(ExportError, match="at least 17"):
        export_onnx(untrained_model_factory(), tmp_path / "m.onnx", input_size=32, opset=13)


def test_feature_model_refuses_a_non_resnet():
    with pytest.raises(TypeError, match="torchvision ResNet"):
        FeatureModel(torch.nn.Linear(3, 7))


@pytest.mark.slow
def test_resnet50_exports(untrained_model_factory, tmp_path):
    model = untrained_model_factory("resnet50")
    path = export_onnx(model, tmp_path / "model.onnx", input_size=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    x = torch.randn(3, 3, 64, 64)
    logits, features, pooled = create_session(path).run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref_logits, _, _ = FeatureModel(model)(x)
    assert features.shape == (3, 2048, 2, 2)
    assert pooled.shape == (3, 256 + 512 + 1024 + 2048)  # each bottleneck stage's pool
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-3)


@pytest.mark.slow
def test_dynamo_exporter_also_works(untrained_model_factory, tmp_path):
    model = untrained_model_factory()
    path = export_onnx(model, tmp_path / "model.onnx", input_size=32, opset=18, dynamo=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    x = torch.randn(4, 3, 32, 32)
    logits, _, _ = create_session(path).run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4)
