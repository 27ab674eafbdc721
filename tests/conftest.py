"""Shared fixtures: the real HAM10000 data in ../shared/data, small real subsets of it, and
throw-away copies of the project for real `dvc repro` runs."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKINDX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
HAM_DIR = SHARED_DATA / "ham10000"
FULLRES_DIR = SHARED_DATA / "ham10000-fullres-sample"
VENV_BIN = Path(sys.executable).parent


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (set SKINDX_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def ham_dir() -> Path:
    """The full 10,015-image HAM10000 folder (flat layout: metadata CSV + images/)."""
    return _require(HAM_DIR)


@pytest.fixture(scope="session")
def fullres_dir() -> Path:
    """70 original 600x450 images, ten per class, with their metadata."""
    return _require(FULLRES_DIR)


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


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone plus work in progress has."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
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
        [str(VENV_BIN / "dvc"), *args], cwd=project, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
