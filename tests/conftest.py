"""Shared fixtures: the HAM10000 data (the real images in ../shared/data, or a synthetic
dataset in the same layout where that folder is absent), small subsets of it, and throw-away
copies of the project for real `dvc repro` runs.

Which data the tests see: SKINDX_TEST_DATA=auto (default) uses the real data when
SKINDX_SHARED_DATA (default ../shared/data) holds it and the synthetic set otherwise (a fresh
clone: `make test-fast` needs nothing outside the repository); `synthetic` always uses the
synthetic set; `real` requires the real data and fails without it.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKINDX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
HAM_DIR = SHARED_DATA / "ham10000"
FULLRES_DIR = SHARED_DATA / "ham10000-fullres-sample"
VENV_BIN = Path(sys.executable).parent
TEST_DATA = os.environ.get("SKINDX_TEST_DATA", "auto").strip().lower()
if TEST_DATA not in {"auto", "synthetic", "real"}:
    raise pytest.UsageError(f"SKINDX_TEST_DATA={TEST_DATA!r}: use auto, synthetic or real")


def uses_real_data(path: Path) -> bool:
    if TEST_DATA == "real":
        if not path.exists():
            raise pytest.UsageError(
                f"test data missing: {path} (SKINDX_TEST_DATA=real; set SKINDX_SHARED_DATA to "
                "the shared data folder, or SKINDX_TEST_DATA=auto to use synthetic data)"
            )
        return True
    return TEST_DATA == "auto" and path.exists()


REAL_DATA = uses_real_data(HAM_DIR) and uses_real_data(FULLRES_DIR)
needs_real_data = pytest.mark.skipif(
    not REAL_DATA, reason="needs the real HAM10000 data (SKINDX_SHARED_DATA); synthetic in use"
)


@pytest.fixture(scope="session")
def ham_dir(tmp_path_factory) -> Path:
    """HAM10000 in the flat layout (HAM10000_metadata.csv + images/): the real 10,015 images
    at 200x150, or a synthetic set of 311 images (see tests/helpers/synthetic.py)."""
    if REAL_DATA:
        return HAM_DIR
    from tests.helpers.synthetic import make_synthetic_ham

    return make_synthetic_ham(tmp_path_factory.mktemp("synthetic") / "ham10000")


@pytest.fixture(scope="session")
def fullres_dir(tmp_path_factory) -> Path:
    """70 images at 600x450, ten per class, with their metadata (real or synthetic)."""
    if REAL_DATA:
        return FULLRES_DIR
    from tests.helpers.synthetic import make_synthetic_fullres

    return make_synthetic_fullres(tmp_path_factory.mktemp("synthetic") / "fullres")


@pytest.fixture(scope="session")
def ham_metadata(ham_dir: Path) -> pd.DataFrame:
    """HAM10000_metadata.csv as text columns: the real 10,015 rows, or a synthetic table at the
    same scale and class balance (metadata only: splits and caps need HAM's numbers)."""
    import pandas as pd

    if REAL_DATA:
        return pd.read_csv(ham_dir / "HAM10000_metadata.csv", dtype=str)
    from tests.helpers.synthetic import synthetic_metadata

    return pd.DataFrame(synthetic_metadata()).astype(str)


@pytest.fixture(scope="session")
def fullres_images(fullres_dir: Path) -> list[Path]:
    return sorted((fullres_dir / "images").glob("ISIC_*.jpg"))


def make_subset(src: Path, dest: Path, per_class: int) -> Path:
    """A flat-layout copy of `src` with the first `per_class` lesions' images of each class."""
    with (src / "HAM10000_metadata.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    by_class: dict[str, list[str]] = {}
    for row in rows:
        lesions = by_class.setdefault(row["dx"], [])
        if row["lesion_id"] not in lesions and len(lesions) < per_class:
            lesions.append(row["lesion_id"])
    keep = [r for r in rows if r["lesion_id"] in by_class.get(r["dx"], [])]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    with (dest / "HAM10000_metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    for row in keep:
        name = f"{row['image_id']}.jpg"
        shutil.copyfile(src / "images" / name, dest / "images" / name)
    return dest


@pytest.fixture(scope="session")
def small_source(ham_dir: Path, tmp_path_factory) -> Path:
    """Real images, ten lesions per class (about 90 images), in the flat layout."""
    return make_subset(ham_dir, tmp_path_factory.mktemp("ham_small"), per_class=10)


def default_paths() -> dict[str, str]:
    """conf/'s `paths` section, for tests that write a params.yaml by hand."""
    from skindx.config import compose_config

    return compose_config(conf_dir=REPO_ROOT / "conf")["paths"]


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone plus work in progress has."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line and (REPO_ROOT / line).is_file()]


def make_project_copy(dest: Path, overrides: Iterable[str] = ("experiment=quick",)) -> Path:
    """Copy the project into `dest` as a fresh git repo whose params.yaml is conf/ composed
    with `overrides`, ready for `dvc repro`."""
    from skindx.config import compose_config, write_params

    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, target)
    write_params(compose_config(list(overrides), conf_dir=dest / "conf"), dest / "params.yaml")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=dest, check=True)
    return dest


def project_env(project: Path, source: Path | None = None) -> dict[str, str]:
    """Environment for running stages in a project copy: its own MLflow store and data source."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    env["MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK"] = "true"
    env["DVC_NO_ANALYTICS"] = "1"
    if source is not None:
        env["SKINDX_DATA_DIR"] = str(source)
    return env


def run_dvc(project: Path, *args: str, env: dict[str, str], timeout: float = 900):
    """Run the venv's dvc in `project`; returns the CompletedProcess (check it yourself)."""
    return subprocess.run(
        [str(VENV_BIN / "dvc"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass(frozen=True)
class QuickProject:
    """A project copy after one quick-profile `dvc repro` (real images, real MLflow, real DVC).

    Shared by the whole session: read it, never change it. A test that must change the project
    (run an experiment, push to a remote) works on `copy_to(dest)`."""

    path: Path
    env: dict[str, str]
    stdout: str
    stderr: str

    def copy_to(self, dest: Path) -> QuickProject:
        """A full copy (git, DVC cache, MLflow store) with its own environment. The copied
        MLflow store's artifact locations are rewritten to point into the copy, so runs in
        the copy never write into the shared project."""
        import sqlite3

        shutil.copytree(self.path, dest, symlinks=True)
        db = dest / "mlflow.db"
        if db.is_file():
            old, new = str(self.path), str(dest)
            with sqlite3.connect(db) as con:
                tables = [
                    r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
                ]
                for table in tables:
                    for column in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                        if "CHAR" in column[2].upper() or "TEXT" in column[2].upper():
                            con.execute(
                                f'UPDATE "{table}" SET "{column[1]}" = '
                                f'replace("{column[1]}", ?, ?) WHERE instr("{column[1]}", ?) > 0',
                                (old, new, old),
                            )
        source = self.env.get("SKINDX_DATA_DIR")
        env = project_env(dest, Path(source) if source else None)
        return QuickProject(dest, env, self.stdout, self.stderr)


def repro_quick_project(dest: Path, source: Path, overrides: Iterable[str] = ()) -> QuickProject:
    """Copy the project into `dest`, compose the quick profile (plus `overrides`) and run the
    whole `dvc repro`; fails the test with the pipeline's output if a stage fails."""
    project = make_project_copy(dest, ("experiment=quick", *overrides))
    env = project_env(project, source)
    result = run_dvc(project, "repro", env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return QuickProject(project, env, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def quick_project(tmp_path_factory, small_source) -> QuickProject:
    """The quick pipeline, run once per session on `small_source` (ten lesions per class of
    `ham_dir`: real images when present, else synthetic): `.path` (the project copy), `.env`
    (its MLflow store and data source), `.stdout`. Its paths are conf/'s defaults; read them
    from `.path / "params.yaml"` (`paths` section) rather than assuming them.
    Read-only; use `quick_project.copy_to(tmp_path / "p")` to change anything."""
    return repro_quick_project(tmp_path_factory.mktemp("quick") / "skindx", small_source)


# --- preprocessed arrays for model tests (train/evaluate issue) --------------------------------
PROCESSED_SPLITS = {"train": 8, "val": 3, "test": 3}  # real images per class and split


def make_processed_dir(src: Path, dest: Path, size: int = 32, per_split=PROCESSED_SPLITS) -> Path:
    """A data/processed layout (docs/contracts.md) built from real images of `src`: each
    class's first lesions, split by lesion, resized with the shared contract."""
    import json

    import numpy as np
    from PIL import Image

    from skindx.inference import CLASS_CODES, PreprocessingContract, resize_to_contract

    contract = PreprocessingContract(input_size=size)
    with (src / "HAM10000_metadata.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    picked: dict[str, list[dict]] = {s: [] for s in per_split}
    for label, code in enumerate(CLASS_CODES):
        seen_lesions: set[str] = set()
        class_rows = [r for r in rows if r["dx"] == code]
        for split, count in per_split.items():
            taken = 0
            for row in class_rows:
                if taken == count:
                    break
                if row["lesion_id"] in seen_lesions:
                    continue
                seen_lesions.add(row["lesion_id"])
                picked[split].append({**row, "label": label})
                taken += 1
    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, split_rows in picked.items():
        images = np.stack(
            [
                resize_to_contract(Image.open(src / "images" / f"{r['image_id']}.jpg"), contract)
                for r in split_rows
            ]
        )
        np.save(dest / f"{split}_images.npy", images)
        np.save(dest / f"{split}_labels.npy", np.array([r["label"] for r in split_rows], np.int64))
        counts[split] = len(split_rows)
        (dest / "splits").mkdir(exist_ok=True)
        with (dest / "splits" / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image_id", "lesion_id", "dx", "label"])
            writer.writerows(
                [r["image_id"], r["lesion_id"], r["dx"], r["label"]] for r in split_rows
            )
    train_counts = np.bincount(np.load(dest / "train_labels.npy"), minlength=len(CLASS_CODES))
    inverse = 1.0 / np.maximum(train_counts, 1)
    weights = inverse / inverse.mean()
    (dest / "class_weights.json").write_text(
        json.dumps({"classes": list(CLASS_CODES), "weights": weights.tolist()})
    )
    (dest / "info.json").write_text(
        json.dumps({"contract": contract.to_dict(), "counts": counts, "data_hash": "test-fixture"})
    )
    return dest


@pytest.fixture(scope="session")
def processed_dir(ham_dir: Path, tmp_path_factory) -> Path:
    """data/processed with 56 train, 21 val and 21 test real images at 32 px (read-only: copy
    it before writing next to it)."""
    return make_processed_dir(ham_dir, tmp_path_factory.mktemp("processed"))


# --- a servable package for serving and UI tests (package issue) -------------------------------
PACKAGE_INPUT_SIZE = 32


def make_untrained_model(arch: str = "resnet18", seed: int = 0, head_scale: float = 10.0):
    """A deterministic untrained build_model; the head is scaled so that the probabilities are
    far from uniform (an untrained head makes every class ~1/7, which hides mistakes)."""
    import torch

    from skindx.models import build_model

    torch.manual_seed(seed)
    model = build_model(arch, num_classes=7, dropout=0.2, weights="none").eval()
    with torch.no_grad():
        model.fc[-1].weight.mul_(head_scale)
    return model


@pytest.fixture(scope="session")
def untrained_model_factory():
    """make_untrained_model(arch="resnet18", seed=0, head_scale=10.0) -> eval-mode build_model."""
    return make_untrained_model


@pytest.fixture(scope="session")
def packaged_model_dir(tmp_path_factory) -> Path:
    """A servable package (docs/contracts.md) from an untrained resnet18 at 32 px, built with
    build_package: model.onnx, weights.safetensors, cam_head.npy, model.json. Read-only: copy it
    (shutil.copytree) before changing anything."""
    from skindx.export.package import build_package
    from skindx.inference import PreprocessingContract

    contract = PreprocessingContract(input_size=PACKAGE_INPUT_SIZE)
    return build_package(
        make_untrained_model(),
        contract,
        tmp_path_factory.mktemp("package") / "model",
        temperature=1.5,
        metrics={"balanced_accuracy": 0.5, "accuracy": 0.6},
        lineage={"git_commit": "test", "mlflow_run_id": None, "data_hash": "test", "params": {}},
        version="test-1",
        name="skindx-resnet50",
    )
