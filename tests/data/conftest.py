"""Fixtures for the data-stage tests: real HAM10000 images rearranged into each layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from skindx.data.ingest import ingest
from skindx.data.sources import read_source
from skindx.inference.classes import CLASS_CODES

CLASSES = list(CLASS_CODES)


def read_metadata_csv(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "HAM10000_metadata.csv", dtype=str)


def make_kaggle_layout(src: Path, dest: Path, *, tab: bool = False) -> Path:
    """The Kaggle/Dataverse layout: metadata at the top, images in two part folders (and,
    as in the real Kaggle upload, a lower-case duplicate of the first part)."""
    meta = read_metadata_csv(src)
    dest.mkdir(parents=True)
    if tab:
        meta.to_csv(dest / "HAM10000_metadata.tab", sep="\t", index=False)
    else:
        meta.to_csv(dest / "HAM10000_metadata.csv", index=False)
    half = len(meta) // 2
    for i, image_id in enumerate(meta["image_id"]):
        parts = (
            ["HAM10000_images_part_1", "ham10000_images_part_1"]
            if i < half
            else ["HAM10000_images_part_2"]
        )
        for part in parts:
            (dest / part).mkdir(exist_ok=True)
            shutil.copyfile(src / "images" / f"{image_id}.jpg", dest / part / f"{image_id}.jpg")
    return dest


def make_isic2018_layout(src: Path, dest: Path, *, groupings: bool = True) -> Path:
    """The ISIC 2018 Task 3 layout, as its three archives extract."""
    meta = read_metadata_csv(src)
    truth = pd.DataFrame({"image": meta["image_id"]})
    for code in CLASS_CODES:
        truth[code.upper()] = (meta["dx"] == code).astype(float)
    (dest / "ISIC2018_Task3_Training_GroundTruth").mkdir(parents=True)
    truth.to_csv(
        dest / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv",
        index=False,
    )
    if groupings:
        spelled = {
            "histo": "histopathology",
            "follow_up": "serial imaging showing no change",
            "consensus": "single image expert consensus",
            "confocal": "confocal microscopy with consistent histopathology",
        }
        pd.DataFrame(
            {
                "image": meta["image_id"],
                "lesion_id": meta["lesion_id"],
                "diagnosis_confirm_type": meta["dx_type"].map(spelled),
            }
        ).to_csv(dest / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    images = dest / "ISIC2018_Task3_Training_Input"
    images.mkdir()
    for image_id in meta["image_id"]:
        shutil.copyfile(src / "images" / f"{image_id}.jpg", images / f"{image_id}.jpg")
    return dest


@pytest.fixture(scope="session")
def raw_sample(fullres_dir: Path, tmp_path_factory) -> Path:
    """data/raw ingested from the 70 full-resolution real images (read-only: copy it)."""
    raw = tmp_path_factory.mktemp("raw_sample") / "raw"
    ingest(read_source(fullres_dir), raw, progress=False)
    return raw


@pytest.fixture
def raw_copy(raw_sample: Path, tmp_path: Path) -> Path:
    """A writable copy of `raw_sample`, to corrupt."""
    return Path(shutil.copytree(raw_sample, tmp_path / "raw"))
