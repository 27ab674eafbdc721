"""Test-time augmentation over the 8 dihedral views (skindx.inference.tta) and its measurement
on a split (skindx.evaluation.tta), on the packaged test model and real processed images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skindx.evaluation.tta import main, tta_report
from skindx.inference.model import load_packaged_model
from skindx.inference.tta import dihedral_views, plain_probabilities, tta_probabilities


def test_the_eight_views_are_the_dihedral_group_with_the_image_first():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 5, 5, 3), dtype=np.uint8)  # no symmetry
    views = dihedral_views(image)
    assert views.shape == (8, 1, 5, 5, 3)
    np.testing.assert_array_equal(views[0], image)
    expected = [np.rot90(b, k, axes=(1, 2)) for b in (image, image[:, :, ::-1]) for k in range(4)]
    for view, want in zip(views, expected, strict=True):
        np.testing.assert_array_equal(view, want)
    assert len({v.tobytes() for v in views}) == 8  # all distinct
    # a group: every view's views are the same eight
    assert {v.tobytes() for v in dihedral_views(views[5])[:, 0]} == {v.tobytes() for v in views}
    with pytest.raises(ValueError, match="square"):
        dihedral_views(np.zeros((1, 4, 5, 3), np.uint8))


def test_tta_is_the_mean_of_the_views_probabilities(packaged_model_dir):
    model = load_packaged_model(packaged_model_dir)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    tta = tta_probabilities(model, images, batch_size=2)  # batches of 2, 2 and 1 image
    assert tta.shape == (5, len(model.classes))
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-5)
    per_view = np.stack([plain_probabilities(model, v) for v in dihedral_views(images)])
    np.testing.assert_allclose(tta, per_view.mean(axis=0), atol=1e-5)
    assert not np.allclose(tta, per_view[0], atol=1e-4)  # the views do change the answer
    # an image every view leaves unchanged gets its plain answer
    flat = np.full((1, 32, 32, 3), 120, np.uint8)
    np.testing.assert_allclose(
        tta_probabilities(model, flat), plain_probabilities(model, flat), atol=1e-5
    )


@pytest.mark.slow
def test_the_report_compares_both_on_the_split_with_a_paired_interval(
    packaged_model_dir, processed_dir, tmp_path, capsys
):
    report = tta_report(packaged_model_dir, processed_dir, n_resamples=200)
    assert report["n_images"] == 21 and report["views"] == 8
    for name in ("plain", "tta"):
        assert 0.0 <= report[name]["balanced_accuracy"] <= 1.0
    diff = report["difference"]
    assert diff["delta"] == pytest.approx(
        report["tta"]["balanced_accuracy"] - report["plain"]["balanced_accuracy"], abs=1e-9
    )
    assert diff["ci_low"] <= diff["delta"] <= diff["ci_high"]
    assert report["timing_ms_per_image"]["tta"] > report["timing_ms_per_image"]["plain"]
    out = tmp_path / "tta.json"
    assert main(["--model", str(packaged_model_dir), "--processed", str(processed_dir),
                 "--resamples", "100", "--out", str(out)]) == 0  # fmt: skip
    assert json.loads(out.read_text())["split"] == "test"
    assert "with 8-view TTA" in capsys.readouterr().out


def test_a_package_of_another_size_is_refused_in_words(packaged_model_dir, ham_dir, tmp_path):
    from tests.conftest import make_processed_dir

    other = make_processed_dir(ham_dir, tmp_path / "processed48", size=48)
    with pytest.raises(ValueError, match="preprocess with the package's contract"):
        tta_report(packaged_model_dir, other)
