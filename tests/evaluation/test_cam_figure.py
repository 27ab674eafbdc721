"""The Grad-CAM before-and-after figure (skindx.evaluation.cam_figure) on the packaged test
model, whose layer4 is too coarse at 32 px, so the package explains on layer3 (cam.onnx)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from skindx.evaluation.cam_figure import VIEW_SIZE, cam_pairs, main
from skindx.inference.model import load_packaged_model
from tests.serving.hostile_corpus import synthetic_jpeg


def write_images(folder, n: int):
    folder.mkdir()
    for i in range(n):
        (folder / f"lesion-{i}.jpg").write_bytes(synthetic_jpeg(i))
    (folder / "notes.txt").write_text("not an image")  # ignored: only .jpg/.png are read
    return sorted(folder.glob("*.jpg"))


def test_each_image_gets_a_layer4_and_a_finer_layer3_map(packaged_model_dir, tmp_path):
    model = load_packaged_model(packaged_model_dir)
    assert model.cam_session is not None  # the package's own choice: layer3
    pairs = cam_pairs(model, write_images(tmp_path / "images", 2))
    for pair in pairs:
        assert sorted(pair.maps) == ["layer3", "layer4"]
        (cam4, grid4), (cam3, grid3) = pair.maps["layer4"], pair.maps["layer3"]
        assert grid3 == (2 * grid4[0], 2 * grid4[1])  # one stride-2 stage finer
        for cam in (cam4, cam3):
            assert cam.shape == (VIEW_SIZE, VIEW_SIZE)
            assert 0.0 <= cam.min() and cam.max() <= 1.0
        assert pair.view.shape == (VIEW_SIZE, VIEW_SIZE, 3)
        assert pair.predicted in model.classes and 0 < pair.confidence <= 1
        # the layer3 map is its own, not the layer4 one upsampled
        assert not np.allclose(cam4, cam3, atol=1e-3)


@pytest.mark.slow
def test_the_command_writes_one_png_with_a_row_per_image(packaged_model_dir, tmp_path, capsys):
    write_images(tmp_path / "images", 3)
    out = main(
        [
            "--model",
            str(packaged_model_dir),
            "--images",
            str(tmp_path / "images"),
            "--n",
            "2",
            "--out",
            str(tmp_path / "fig" / "cam.png"),
        ]
    )
    assert out == tmp_path / "fig" / "cam.png"
    assert sorted(p.name for p in out.parent.iterdir()) == ["cam.png"]  # no partial left
    with Image.open(out) as png:
        width, height = png.size
    assert width > height > 0  # two rows of three panels
    # the maps alone: one column fewer (no image pixels), same rows
    maps = main(
        ["--model", str(packaged_model_dir), "--images", str(tmp_path / "images"),
         "--n", "2", "--maps-only", "--out", str(tmp_path / "fig" / "maps.png")]
    )  # fmt: skip
    with Image.open(maps) as png:
        assert png.size[0] < width and png.size[1] == height
    assert "wrote" in capsys.readouterr().out
