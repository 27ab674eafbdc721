"""Ingest writes data/raw in the contract's form, from any layout, and explains bad sources."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from skindx.config import compose_config, write_params
from skindx.data.ingest import RAW_COLUMNS, compute_data_hash, ingest, read_metadata
from skindx.data.sources import read_source
from tests.conftest import REPO_ROOT
from tests.data.conftest import make_isic2018_layout, make_kaggle_layout


def test_raw_layout_matches_the_contract(raw_sample: Path, fullres_dir: Path):
    meta = read_metadata(raw_sample)
    assert list(meta.columns) == list(RAW_COLUMNS)
    assert len(meta) == 70
    for row in meta.itertuples():
        data = (raw_sample / row.path).read_bytes()
        assert row.path == f"images/{row.image_id}.jpg"
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert data == (fullres_dir / "images" / f"{row.image_id}.jpg").read_bytes()
    manifest = json.loads((raw_sample / "manifest.json").read_text())
    assert manifest["layout"] == "flat" and manifest["n_images"] == 70 == manifest["n_rows"]
    assert manifest["counts"] == {
        code: 10 for code in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    }
    assert manifest["data_hash"] == compute_data_hash(meta)
    assert {"source", "created"} <= set(manifest)


def test_every_layout_gives_the_same_data_hash(raw_sample: Path, fullres_dir: Path, tmp_path: Path):
    """Same images, labels and lesions -> same hash, whichever layout they came in."""
    expected = json.loads((raw_sample / "manifest.json").read_text())["data_hash"]
    for name, make in (("kaggle", make_kaggle_layout), ("isic", make_isic2018_layout)):
        manifest = ingest(
            read_source(make(fullres_dir, tmp_path / name)),
            tmp_path / f"raw_{name}",
            progress=False,
        )
        assert manifest["data_hash"] == expected, name


def test_data_hash_changes_with_a_label():
    meta = pd.DataFrame(
        {"image_id": ["a", "b"], "sha256": ["1", "2"], "dx": ["nv", "mel"], "lesion_id": ["x", "y"]}
    )
    assert compute_data_hash(meta) == compute_data_hash(meta.iloc[::-1])  # order-free
    changed = meta.assign(dx=["nv", "nv"])
    assert compute_data_hash(changed) != compute_data_hash(meta)


def test_reingest_replaces_previous_output(fullres_dir: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "images" / "ISIC_0000000.jpg").write_bytes(b"stale")
    ingest(read_source(fullres_dir), raw, progress=False)
    assert not (raw / "images" / "ISIC_0000000.jpg").exists()
    assert len(list((raw / "images").iterdir())) == 70


@pytest.fixture(scope="module")
def stage_project(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("ingest_project")
    write_params(
        compose_config(["experiment=quick"], conf_dir=REPO_ROOT / "conf"), project / "params.yaml"
    )
    return project


def run_ingest(project: Path, source: str):
    env = {
        "PATH": str(Path(sys.executable).parent),
        "SKINDX_DATA_DIR": source,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
    }
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "ingest.py")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # over 8 s here: a whole stage, MLflow store or several epochs
def test_stage_prints_the_source_it_used(stage_project: Path, fullres_dir: Path):
    result = run_ingest(stage_project, str(fullres_dir))
    assert result.returncode == 0, result.stderr
    assert f"using source {fullres_dir} (from $SKINDX_DATA_DIR)" in result.stdout
    assert "layout flat" in result.stdout
    assert (stage_project / "data/raw/manifest.json").exists()


def test_stage_with_a_missing_source_fails_with_one_message(stage_project: Path, tmp_path: Path):
    missing = tmp_path / "no-such-folder"
    result = run_ingest(stage_project, str(missing))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"ingest: error: data source {missing} does not exist" in result.stderr
    assert "HAM10000_metadata.csv" in result.stderr  # says what was expected
