"""skindx.models.build_model: architectures, head, and the three weight sources."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision import models

from skindx.models import ModelWeightsError, build_model


@pytest.mark.parametrize(("arch", "features"), [("resnet18", 512), ("resnet50", 2048)])
def test_build_model_head_and_output_shape(arch, features):
    model = build_model(arch, num_classes=7, dropout=0.3, weights="none").eval()
    head = model.fc
    assert isinstance(head, nn.Sequential) and len(head) == 2
    assert isinstance(head[0], nn.Dropout) and head[0].p == pytest.approx(0.3)
    assert isinstance(head[1], nn.Linear)
    assert (head[1].in_features, head[1].out_features) == (features, 7)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="resnet18"):
        build_model("vgg11")


def _assert_same_weights(a: nn.Module, b: nn.Module, skip_prefix: str | None = None):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if skip_prefix and key.startswith(skip_prefix):
            continue
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_weights_from_a_path_load_exactly(tmp_path, suffix):
    torch.manual_seed(1)
    source = build_model("resnet18", weights="none")
    with torch.no_grad():  # make sure the head differs from any fresh init too
        source.fc[1].weight.add_(1.0)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(2)
    loaded = build_model("resnet18", weights=str(path))
    _assert_same_weights(source, loaded)


def test_weights_from_a_training_checkpoint(tmp_path):
    source = build_model("resnet18")
    path = tmp_path / "best.pt"
    torch.save({"model_state": source.state_dict(), "epoch": 3, "config": {}}, path)
    _assert_same_weights(source, build_model("resnet18", weights=path))


def test_backbone_only_imagenet_style_state_dict_skips_the_head(tmp_path, caplog):
    torch.manual_seed(3)
    backbone = models.resnet18(weights=None)  # 1000-class fc, as torchvision ships it
    path = tmp_path / "resnet18-imagenet-style.pth"
    torch.save(backbone.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="skindx.models.factory"):
        model = build_model("resnet18", num_classes=7, weights=str(path))
    for key, value in backbone.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.state_dict()[key], value), key
    assert model.fc[1].out_features == 7
    assert "head not loaded" in caplog.text and "fc.weight" in caplog.text


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "r50.pt"
    torch.save(build_model("resnet50").state_dict(), path)
    with pytest.raises(ModelWeightsError, match="do not fit"):
        build_model("resnet18", weights=str(path))


@dataclass
class NotATensor:
    value: int = 1


def test_pickled_objects_are_refused_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model_state": NotATensor()}, path)
    with pytest.raises(ModelWeightsError, match="could not read weights"):
        build_model("resnet18", weights=str(path))


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelWeightsError, match="neither 'none', 'imagenet' nor an existing file"):
        build_model("resnet18", weights=str(tmp_path / "nope.pt"))


def _online(host: str = "download.pytorch.org") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_imagenet_without_internet_says_what_to_do(tmp_path, monkeypatch):
    if _online():
        pytest.skip("download.pytorch.org is reachable: the offline failure cannot happen here")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: a real download attempt
    with pytest.raises(ModelWeightsError) as err:
        build_model("resnet18", weights="imagenet")
    message = str(err.value)
    assert "internet" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "model.weights" in message


def test_zero_init_residual_starts_every_block_as_the_identity():
    """model.zero_init_residual: each Bottleneck's last BatchNorm starts at gamma 0, so a block's
    residual branch adds nothing and the block passes its input through (after the ReLU); off,
    the branch changes its input. Loaded weights replace the init."""
    torch.manual_seed(0)
    zeroed = build_model("resnet50", weights="none", zero_init_residual=True).eval()
    plain = build_model("resnet50", weights="none").eval()
    blocks = [m for m in zeroed.modules() if isinstance(m, models.resnet.Bottleneck)]
    assert len(blocks) == 16 and all(torch.all(b.bn3.weight == 0) for b in blocks)
    x = torch.relu(torch.randn(1, 256, 8, 8))  # a block without downsample sees 256 channels
    with torch.no_grad():
        assert torch.equal(zeroed.layer1[1](x), x)
        assert not torch.allclose(plain.layer1[1](x), x)
    assert all(
        torch.all(b.bn3.weight == 1)
        for b in plain.modules()
        if isinstance(b, models.resnet.Bottleneck)
    )


def test_zero_init_residual_gives_way_to_loaded_weights(tmp_path):
    """The flag shapes the random init only: a state dict loaded on top replaces the zeros."""
    source = build_model("resnet18", weights="none")
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    loaded = build_model("resnet18", weights=str(tmp_path / "weights.pt"), zero_init_residual=True)
    assert torch.all(loaded.layer1[0].bn2.weight == 1)  # a BasicBlock's last BatchNorm
    _assert_same_weights(source, loaded)
