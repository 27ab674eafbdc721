"""preprocess on a validated real sample: the outputs of docs/contracts.md, consistent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skindx.data.errors import DataError
from skindx.data.preprocess import make_splits, preprocess, require_validated
from skindx.data.splits import SPLITS
from skindx.inference.preprocessing import PreprocessingContract, resize_to_contract
from tests.conftest import REPO_ROOT, default_paths
from tests.data.conftest import CLASSES

DATA = {
    "classes": CLASSES,
    "split": {"train": 0.7, "val": 0.15, "test": 0.15, "seed": 3},
    "image_size": 32,
    "resize_policy": "shorter_side_center_crop",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "max_per_class": None,
    "train_max_per_class": None,
}


@pytest.fixture(scope="module")
def outputs(raw_sample: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    info = preprocess(raw_sample, out / "processed", out / "reports", DATA, progress=False)
    return out, info


def test_arrays_labels_and_split_csvs_agree(outputs, raw_sample: Path):
    out, info = outputs
    processed = out / "processed"
    contract = PreprocessingContract.from_data_params(DATA)
    seen: set[str] = set()
    for split in SPLITS:
        table = pd.read_csv(processed / "splits" / f"{split}.csv")
        assert list(table.columns) == ["image_id", "lesion_id", "dx", "label"]
        labels = np.load(processed / f"{split}_labels.npy")
        images = np.load(processed / f"{split}_images.npy", mmap_mode="r")
        assert labels.dtype == np.int64 and images.dtype == np.uint8
        assert images.shape == (len(table), 32, 32, 3)
        np.testing.assert_array_equal(labels, table["label"].to_numpy())
        assert [CLASSES[i] for i in labels] == list(table["dx"])
        first = table.iloc[0]
        expected = resize_to_contract(
            Image.open(raw_sample / "images" / f"{first.image_id}.jpg"), contract
        )
        np.testing.assert_array_equal(images[0], expected)
        assert set(table["dx"]) == set(CLASSES)
        assert seen.isdisjoint(table["lesion_id"])
        seen |= set(table["lesion_id"])
    assert sum(info["n_images"].values()) == 70
    assert info["contract"] == contract.to_dict()
    assert info["data_hash"] == json.loads((raw_sample / "manifest.json").read_text())["data_hash"]


def test_reports_and_class_weights(outputs):
    out, info = outputs
    counts = json.loads((out / "reports" / "class_counts.json").read_text())
    assert {s: counts[s] for s in SPLITS} == info["counts"]
    assert counts["n_images"] == info["n_images"]
    distribution = pd.read_csv(out / "reports" / "class_distribution.csv")
    assert list(distribution.columns) == ["split", "dx", "count"]
    assert distribution.groupby("split")["count"].sum().to_dict() == info["n_images"]
    weights = json.loads((out / "processed" / "class_weights.json").read_text())
    assert weights["classes"] == CLASSES
    assert np.mean(weights["weights"]) == pytest.approx(1.0)
    train = info["counts"]["train"]
    rarest = min(CLASSES, key=lambda c: train[c])
    assert max(weights["weights"]) == weights["weights"][CLASSES.index(rarest)]


def test_caps_apply_by_class_and_train_cap_spares_val_and_test(ham_metadata: pd.DataFrame):
    meta = ham_metadata.copy()
    full = make_splits(meta, DATA)
    capped = make_splits(meta, {**DATA, "train_max_per_class": 200})
    for split in ("val", "test"):
        assert set(capped[capped["split"] == split]["image_id"]) == set(
            full[full["split"] == split]["image_id"]
        )
    assert capped[capped["split"] == "train"]["dx"].value_counts().max() <= 200
    small = make_splits(meta, {**DATA, "max_per_class": 10})
    assert (small["dx"].value_counts() <= 10).all()
    assert small.groupby("split")["dx"].nunique().to_dict() == {"test": 7, "train": 7, "val": 7}


def test_refuses_data_that_failed_validation(tmp_path: Path):
    summary = tmp_path / "summary.json"
    with pytest.raises(DataError, match="run the validate stage"):
        require_validated(summary)
    summary.write_text(
        json.dumps({"success": False, "failed": [{"description": "every image exists"}]})
    )
    with pytest.raises(DataError, match="every image exists"):
        require_validated(summary)
    summary.write_text(json.dumps({"success": True}))
    require_validated(summary)


def run_preprocess_stage(project: Path, data: dict, **env: str) -> subprocess.CompletedProcess:
    summary = project / "reports" / "validation" / "summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"success": True}))
    params = {
        "paths": default_paths(),
        "data": data,
        "mlflow": {"tracking_uri": f"sqlite:///{project / 'mlflow.db'}"},
    }
    (project / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "preprocess.py")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(Path(sys.executable).parent), **env},
    )


@pytest.mark.slow
def test_a_bad_setting_fails_the_stage_in_one_line(tmp_path: Path):
    data = {
        "classes": CLASSES,
        "image_size": 32,
        "resize_policy": "center_crop",
    }
    result = run_preprocess_stage(tmp_path, data)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "preprocess: error: unknown resize_policy 'center_crop'" in result.stderr

    # a missing key: named, still one line
    result = run_preprocess_stage(tmp_path, {k: v for k, v in data.items() if k != "classes"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "preprocess: error: missing setting 'classes'" in result.stderr

    # the traceback on request
    result = run_preprocess_stage(tmp_path, data, SKINDX_TRACEBACK="1")
    assert result.returncode == 1 and "Traceback" in result.stderr
