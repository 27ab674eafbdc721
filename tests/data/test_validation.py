"""The Great Expectations suite catches each kind of corruption of a real sample, by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from skindx.data.ingest import ingest
from skindx.data.sources import read_source
from skindx.data.validation import validate, write_summary
from tests.conftest import REPO_ROOT, default_paths
from tests.data.conftest import CLASSES, make_isic2018_layout, read_metadata_csv


@pytest.fixture
def source(fullres_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the 70-image real sample, to corrupt before ingesting it."""
    return Path(shutil.copytree(fullres_dir, tmp_path / "source"))


def ingest_and_validate(source: Path, tmp_path: Path, docs: bool = False):
    raw = tmp_path / "raw"
    ingest(read_source(source), raw, progress=False)
    return validate(raw, CLASSES, docs_dir=tmp_path / "docs" if docs else None, progress=False)


def image_of(source: Path, row: int) -> tuple[str, Path]:
    image_id = read_metadata_csv(source).loc[row, "image_id"]
    return image_id, source / "images" / f"{image_id}.jpg"


@pytest.mark.slow  # over 8 s here: a whole stage, MLflow store or several epochs
def test_clean_sample_passes_and_writes_data_docs(raw_copy: Path, tmp_path: Path):
    report = validate(raw_copy, CLASSES, docs_dir=tmp_path / "docs", progress=False)
    assert report.success, report.format()
    assert report.n_rows == 70 and report.n_expectations >= 25
    assert report.failed == [] and report.skipped == []
    summary = json.loads(write_summary(report, tmp_path / "summary.json").read_text())
    assert summary["success"] is True and summary["n_failed"] == 0 and summary["failed"] == []
    assert summary["n_rows"] == 70
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "ham10000_raw" in index
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))


def corrupt_unknown_dx(source: Path) -> str:
    image_id, _ = image_of(source, 0)
    meta = read_metadata_csv(source)
    meta.loc[0, "dx"] = "melanomaa"
    meta.to_csv(source / "HAM10000_metadata.csv", index=False)
    return image_id


def corrupt_duplicate_id(source: Path) -> str:
    meta = read_metadata_csv(source)
    meta = pd.concat([meta, meta.iloc[[5]]], ignore_index=True)
    meta.to_csv(source / "HAM10000_metadata.csv", index=False)
    return meta.loc[5, "image_id"]


def corrupt_truncated_jpeg(source: Path) -> str:
    image_id, path = image_of(source, 10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return image_id


def corrupt_missing_file(source: Path) -> str:
    image_id, path = image_of(source, 20)
    path.unlink()
    return image_id


def corrupt_grayscale(source: Path) -> str:
    image_id, path = image_of(source, 30)
    Image.open(path).convert("L").save(path, "JPEG")
    return image_id


def corrupt_too_small(source: Path) -> str:
    image_id, path = image_of(source, 40)
    Image.open(path).resize((80, 60)).save(path, "JPEG")
    return image_id


def corrupt_byte_identical_duplicate(source: Path) -> str:
    image_id, path = image_of(source, 50)
    _, other = image_of(source, 51)
    other.write_bytes(path.read_bytes())
    return image_id


def corrupt_lesion_id(source: Path) -> str:
    meta = read_metadata_csv(source)
    meta.loc[60, "lesion_id"] = "lesion-60"
    meta.to_csv(source / "HAM10000_metadata.csv", index=False)
    return meta.loc[60, "image_id"]


CORRUPTIONS = {
    "unknown dx": (corrupt_unknown_dx, "dx is one of the configured classes", "melanomaa"),
    "duplicated image_id": (corrupt_duplicate_id, "image_id is unique", None),
    "truncated JPEG": (corrupt_truncated_jpeg, "every image decodes", "truncated"),
    "missing file": (corrupt_missing_file, "every image exists", "file not found"),
    "grayscale image": (corrupt_grayscale, "every image is RGB", "image_mode=L"),
    "image too small": (
        corrupt_too_small,
        "at least 64 px on its shorter side",
        "image_min_side=60",
    ),
    "byte-identical duplicate": (
        corrupt_byte_identical_duplicate,
        "byte-identical duplicate",
        None,
    ),
    "malformed lesion_id": (corrupt_lesion_id, r"lesion_id matches HAM_\d{7}", "lesion-60"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_named_with_the_offending_row(name: str, source: Path, tmp_path: Path):
    corrupt, expectation, detail = CORRUPTIONS[name]
    image_id = corrupt(source)
    report = ingest_and_validate(source, tmp_path)
    assert not report.success
    message = report.failure_message()
    assert expectation in message
    assert image_id in message
    if detail:
        assert detail in message
    # Exactly one expectation fails: each check names its own problem, nothing else.
    assert len(report.failed) == 1, message


@pytest.mark.slow  # over 8 s here: a whole stage, MLflow store or several epochs
def test_all_corruptions_at_once_fail_the_stage_naming_each(source: Path, tmp_path: Path):
    """The validate stage itself: non-zero exit, each failure and its example named, no traceback."""
    ids = {
        name: CORRUPTIONS[name][0](source)
        for name in ("unknown dx", "duplicated image_id", "truncated JPEG", "missing file")
    }
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    ingest(read_source(source), project / "data" / "raw", progress=False)
    params = {
        "paths": default_paths(),
        "data": {"classes": CLASSES},
        "mlflow": {
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "data_experiment": "skindx-data",
        },
    }
    (project / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "validate.py")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": str(Path(sys.executable).parent),
            "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        },
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "4 critical data expectation(s) failed" in result.stderr
    for name, image_id in ids.items():
        expectation = CORRUPTIONS[name][1]
        assert expectation in result.stderr, (name, result.stderr)
        assert image_id in result.stderr, (name, result.stderr)
    summary = json.loads((project / "reports/validation/summary.json").read_text())
    assert summary["success"] is False and summary["n_failed"] == 4
    assert (project / "reports/validation/data_docs/index.html").exists()


def test_duplicate_image_within_one_lesion_is_a_warning(source: Path, tmp_path: Path):
    """HAM10000 itself has two such pairs (e.g. ISIC_0024366 = ISIC_0029861, one lesion)."""
    meta = read_metadata_csv(source)
    copy = meta.iloc[[7]].assign(image_id="ISIC_9999999")
    pd.concat([meta, copy]).to_csv(source / "HAM10000_metadata.csv", index=False)
    original = source / "images" / f"{meta.loc[7, 'image_id']}.jpg"
    (source / "images" / "ISIC_9999999.jpg").write_bytes(original.read_bytes())
    report = ingest_and_validate(source, tmp_path)
    assert report.success, report.format()
    [warning] = report.warnings
    assert warning.description == "no image is a byte-identical duplicate of another"
    assert {e["image_id"] for e in warning.examples} == {"ISIC_9999999", meta.loc[7, "image_id"]}


def test_demographic_problems_are_warnings_not_failures(source: Path, tmp_path: Path):
    meta = read_metadata_csv(source)
    meta.loc[3, "age"] = "150"
    meta.loc[4, "sex"] = "M"
    meta.to_csv(source / "HAM10000_metadata.csv", index=False)
    report = ingest_and_validate(source, tmp_path)
    assert report.success, report.format()
    warned = {w.description for w in report.warnings}
    assert warned == {"age is in [0, 120] or null", "sex is male, female or unknown"}


def test_too_many_missing_ages_is_reported(source: Path, tmp_path: Path):
    meta = read_metadata_csv(source)
    meta.loc[:4, "age"] = None  # 5 of 70 > 2 %
    meta.to_csv(source / "HAM10000_metadata.csv", index=False)
    report = ingest_and_validate(source, tmp_path)
    assert "age is null in at most 2% of rows" in {w.description for w in report.warnings}


def test_missing_column_is_named(source: Path, tmp_path: Path):
    meta = read_metadata_csv(source).drop(columns=["lesion_id"])
    meta.to_csv(source / "HAM10000_metadata.csv", index=False)
    report = ingest_and_validate(source, tmp_path)
    assert not report.success
    assert "column lesion_id is present" in report.failure_message()


def test_isic2018_layout_skips_the_demographic_checks_it_cannot_have(
    fullres_dir: Path, tmp_path: Path
):
    report = ingest_and_validate(make_isic2018_layout(fullres_dir, tmp_path / "isic"), tmp_path)
    assert report.success, report.format()
    assert len(report.skipped) == 4 and all(
        "no age" in s or "no sex" in s or "no localization" in s for s in report.skipped
    )
