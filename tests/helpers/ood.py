"""A servable package with an out-of-distribution scorer, for the serving, UI and browser
tests: built with build_package exactly as the package stage does, on the real images of a
data/processed layout (tests.conftest.make_processed_dir)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from skindx.export.card import write_card


def build_ood_package(processed_dir: Path, dest: Path, model, *, probes=None) -> Path:
    """`model` (a build_model ResNet) packaged at the processed images' size with its scorer
    fitted on their train split, thresholded on val; `probes` as in OodFitData (default: the
    full probe set, whose report lands in dest.parent / "ood.json")."""
    from skindx.data.processed import load_split, read_contract
    from skindx.export.ood import OodFitData
    from skindx.export.package import build_package

    train = load_split(processed_dir, "train")
    data = OodFitData(
        train_images=np.asarray(train.images),
        train_labels=train.labels,
        val_images=np.asarray(load_split(processed_dir, "val").images),
        test_images=np.asarray(load_split(processed_dir, "test").images),
        probes=probes,
    )
    return build_package(
        model,
        read_contract(processed_dir),
        dest,
        temperature=1.0,
        ood=data,
        ood_report=dest.parent / "ood.json",
        version="ood-test-1",
        name="skindx-resnet50",
    )


def with_ood_threshold(package: Path, dest: Path, threshold: float) -> Path:
    """A copy of `package` whose card moves the scorer's threshold (resealed, as a package
    stage with another pass rate would have written it)."""
    copy = shutil.copytree(package, dest)
    card = json.loads((copy / "model.json").read_text())
    card["ood"]["threshold"] = float(threshold)
    write_card(card, copy)
    return copy
