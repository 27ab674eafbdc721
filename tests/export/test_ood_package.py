"""The package stage's out-of-distribution scorer: fitted on the exported graph, sealed by the
card, reported against the non-dermoscopy probes (skindx.export.ood)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from skindx.data.processed import load_split
from skindx.export.ood import OodFitData, probe_images
from skindx.export.package import build_package
from skindx.inference import PreprocessingContract
from skindx.inference.model import ModelIntegrityError, load_packaged_model, verify_package
from skindx.inference.ood import OOD_FILE

pytestmark = pytest.mark.slow  # builds a package with its OOD scorer (~1-2 min here)


@pytest.fixture(scope="module")
def ood_package(processed_dir, untrained_model_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("ood-package")
    data = OodFitData(
        train_images=np.asarray(load_split(processed_dir, "train").images),
        train_labels=load_split(processed_dir, "train").labels,
        val_images=np.asarray(load_split(processed_dir, "val").images),
        test_images=np.asarray(load_split(processed_dir, "test").images),
    )
    path = build_package(
        untrained_model_factory(),
        PreprocessingContract(input_size=32),
        out / "model",
        ood=data,
        ood_report=out / "ood.json",
        version="ood-1",
    )
    return path, json.loads((out / "ood.json").read_text()), data


def test_probe_set_has_every_kind_the_issue_names():
    probes = probe_images()
    assert {"photographs", "flat_colours", "noise", "text_screenshot", "xray_like"} <= set(probes)
    assert {"astronaut", "coffee", "chelsea", "rocket"} <= set(probes["photographs"])
    xray = np.asarray(probes["xray_like"]["xray_chest"])
    assert np.array_equal(xray[..., 0], xray[..., 2])  # grayscale
    assert all(im.mode == "RGB" for group in probes.values() for im in group.values())


def test_scorer_files_are_listed_and_sealed_by_the_card(ood_package, tmp_path):
    path, _, _ = ood_package
    card = verify_package(path)
    assert card["ood"]["threshold"] == pytest.approx(
        json.loads((path / OOD_FILE).read_text())["threshold"]
    )
    names = [OOD_FILE] + [s[k] for s in card["ood"]["stages"] for k in ("whitening", "means")]
    assert [s["name"] for s in card["ood"]["stages"]] == ["layer1", "layer2", "layer3", "layer4"]
    for name in names:
        assert name in card["files"], name
    assert card["outputs"] == ["logits", "features", "pooled"]
    # an edited covariance is refused like any other altered file
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    whitening = copy / card["ood"]["stages"][0]["whitening"]
    array = np.load(whitening)
    np.save(whitening, array * 2)
    with pytest.raises(ModelIntegrityError, match="ood_layer1_whitening.npy"):
        verify_package(copy)


def test_served_model_scores_uploads_and_the_report_is_consistent(ood_package):
    path, report, data = ood_package
    model = load_packaged_model(path)
    out = model.analyse(data.test_images)
    assert out.ood_scores.shape == (len(data.test_images),)
    assert out.in_distribution.dtype == bool
    rejected = 1 - out.in_distribution.mean()
    assert report["test_rejection_rate"] == pytest.approx(rejected, abs=1e-4)
    assert report["n_test_images"] == len(data.test_images)
    assert 0.9 <= report["val_pass_rate"] <= 1.0
    assert set(report["auroc_by_group"]) >= {"photographs", "flat_colours", "noise"}
    assert "energy" in report["auroc_by_method"]
    # the card carries the headline numbers
    assert model.card["ood"]["evaluation"]["auroc"] == report["auroc"]
    # flat colours and noise are far from real lesions even for an untrained network's
    # early stages: an honest, loose bound for a 56-image fit (the demo model is in README)
    assert report["auroc_by_group"]["flat_colours"] > 0.8
    assert report["auroc"] > 0.7
