"""numpy CAM (skindx.inference.cam) against pytorch-grad-cam's GradCAM on the torch model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from skindx.inference import PreprocessingContract, normalize, resize_to_contract
from skindx.inference.cam import (
    cam_for_class,
    class_activation_map,
    jet_colormap,
    normalize_map,
    overlay,
    resize_bilinear,
)


@pytest.mark.slow  # over 8 s here: a whole stage, MLflow store or several epochs
def test_cam_equals_gradcam_on_layer4(fullres_images, untrained_model_factory):
    """For a GAP -> dropout -> linear head, Grad-CAM = ReLU(sum_k W[c,k] A_k) up to scale."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from skindx.export.onnx import FeatureModel
    from skindx.export.package import cam_head

    size = 96  # layer4 is 3x3: a map with structure, unlike 1x1 at 32 px
    contract = PreprocessingContract(input_size=size)
    model = untrained_model_factory(head_scale=1.0)
    images = np.stack([resize_to_contract(Image.open(p), contract) for p in fullres_images[::20]])
    x = torch.from_numpy(normalize(images, contract))
    with torch.no_grad():
        _, features, _ = FeatureModel(model)(x)
    weight = cam_head(model)[:, :-1]
    with GradCAM(model=model, target_layers=[model.layer4]) as gradcam:
        for c in (0, 4):
            expected = gradcam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x))
            for i in range(len(images)):
                ours = cam_for_class(features[i].numpy(), weight, c, (size, size))
                assert expected[i].max() > 0.99, "flat Grad-CAM map: the test would prove nothing"
                assert ours.shape == expected[i].shape
                np.testing.assert_allclose(ours, expected[i], atol=1e-4)


def test_cam_detects_a_wrong_class_weight():
    """The comparison above can fail: another class's weights give another map."""
    rng = np.random.default_rng(0)
    features = rng.random((8, 4, 4)).astype(np.float32)
    weight = rng.normal(size=(3, 8)).astype(np.float32)
    a = cam_for_class(features, weight, 0, (16, 16))
    b = cam_for_class(features, weight, 1, (16, 16))
    assert np.abs(a - b).max() > 0.1


def test_class_activation_map_is_relu_of_weighted_sum():
    features = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    weight = np.array([[1.0, -1.0], [-1.0, 0.5]], np.float32)
    raw = features[0] - features[1]  # class 0: all -6 -> ReLU 0
    np.testing.assert_array_equal(class_activation_map(features, weight, 0), np.maximum(raw, 0))
    expected = np.maximum(-features[0] + 0.5 * features[1], 0)
    np.testing.assert_allclose(class_activation_map(features[None], weight, 1), expected)
    with pytest.raises(ValueError, match="do not match"):
        class_activation_map(features, np.ones((2, 5), np.float32), 0)


def test_resize_bilinear_matches_opencv():
    import cv2

    rng = np.random.default_rng(1)
    for shape, size in [((4, 4), (128, 128)), ((2, 3), (50, 70)), ((7, 7), (224, 224))]:
        src = rng.random(shape).astype(np.float32)
        expected = cv2.resize(src, size[::-1], interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(resize_bilinear(src, size), expected, atol=1e-5)


def test_normalize_map_range_and_flat_map():
    cam = normalize_map(np.array([[2.0, 4.0], [6.0, 10.0]]))
    assert cam.min() == 0.0 and cam.max() == 1.0
    np.testing.assert_array_equal(normalize_map(np.full((3, 3), 5.0)), np.zeros((3, 3)))


def test_jet_colormap_runs_blue_to_red():
    colours = jet_colormap(np.array([0.0, 0.5, 1.0]))
    assert colours.dtype == np.uint8 and colours.shape == (3, 3)
    low, mid, high = colours.astype(int)
    assert low[2] > 100 and low[0] == 0  # dark blue
    assert mid[1] == 255 and mid[0] < 200 and mid[2] < 200  # green-ish
    assert high[0] > 100 and high[2] == 0  # dark red


def test_overlay_blends_a_resized_map_over_the_image():
    image = np.full((40, 60, 3), 200, np.uint8)
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 1.0
    out = overlay(image, cam, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out[0, 0, 0] > out[0, 0, 2]  # hot corner: red over blue
    assert out[-1, -1, 2] > out[-1, -1, 0]  # cold corner: blue over red
    with pytest.raises(ValueError):
        overlay(image[..., 0], cam)


# --- Grad-CAM on layer3 (cam.onnx) when layer4 is too coarse (issue 12) -------------------------
def test_layer3_gradcam_weights_equal_autograd(untrained_model_factory):
    """Layer3GradCam writes layer4's backward pass out by hand (ONNX has no autograd): its
    weights are exactly mean_ij d logit_c / d layer3, for BasicBlock and Bottleneck ResNets."""
    import torch

    from skindx.export.onnx import Layer3GradCam

    for arch in ("resnet18", "resnet50"):
        model = untrained_model_factory(arch=arch, head_scale=1.0)
        x = torch.randn(2, 3, 64, 64)
        module = Layer3GradCam(model)
        with torch.no_grad():
            activations, weights = module(x)
        a3 = module.layer3(x).detach().requires_grad_(True)
        logits = model.fc(torch.flatten(model.avgpool(model.layer4(a3)), 1))
        expected = torch.stack(
            [
                torch.autograd.grad(logits[:, c].sum(), a3, retain_graph=True)[0].mean((2, 3))
                for c in range(7)
            ],
            dim=1,
        )
        assert weights.shape == (2, 7, a3.shape[1]) and activations.shape == a3.shape
        scale = float(expected.abs().max())
        assert scale > 0
        np.testing.assert_allclose(weights.numpy(), expected.numpy(), atol=1e-5 * scale)


@pytest.mark.slow  # exports two graphs and runs pytorch-grad-cam
def test_served_layer3_cam_equals_gradcam_on_layer3(
    fullres_images, untrained_model_factory, tmp_path
):
    """At 64 px layer4 is 2x2, so the package explains on layer3 (4x4) through cam.onnx, and
    the served map is pytorch-grad-cam's GradCAM on layer3."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from skindx.export.package import build_package
    from skindx.inference.model import load_packaged_model

    size = 64
    contract = PreprocessingContract(input_size=size)
    model = untrained_model_factory(head_scale=1.0)
    package = load_packaged_model(build_package(model, contract, tmp_path / "m", version="cam"))
    assert package.card["cam"]["layer"] == "layer3" and package.card["cam"]["grid"] == [4, 4]
    images = np.stack([resize_to_contract(Image.open(p), contract) for p in fullres_images[::20]])
    x = torch.from_numpy(normalize(images, contract))
    with GradCAM(model=model, target_layers=[model.layer3]) as gradcam:
        for c in (0, 4):
            expected = gradcam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x))
            for i in range(len(images)):
                ours, layer, grid = package.explain(images[i], c, (size, size))
                assert (layer, grid) == ("layer3", (4, 4))
                assert expected[i].max() > 0.99, "flat Grad-CAM map: the test would prove nothing"
                np.testing.assert_allclose(ours, expected[i], atol=1e-3)
