"""The colour-shift robustness measurement (skindx.evaluation.shift) on the packaged test model
and real test images: without a cast it reproduces the score of the processed arrays, the
identity cast changes nothing, a real cast changes the pixels the model sees, and the report
carries the paired difference."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from skindx.data.processed import load_split
from skindx.evaluation.metrics import balanced_accuracy
from skindx.evaluation.shift import ISIC_ARCHIVE_CAST, cast_image, main, shift_report
from skindx.inference.model import load_packaged_model


@pytest.fixture
def raw_dir(processed_dir, ham_dir, tmp_path):
    """data/raw for the processed test split: metadata.csv with paths, and the images."""
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    with (processed_dir / "splits/test.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    with (raw / "metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "lesion_id", "dx", "path"])
        for r in rows:
            shutil.copyfile(
                ham_dir / "images" / f"{r['image_id']}.jpg", raw / "images" / f"{r['image_id']}.jpg"
            )
            writer.writerow([r["image_id"], r["lesion_id"], r["dx"], f"images/{r['image_id']}.jpg"])
    return raw


def test_a_cast_multiplies_each_channel():
    image = Image.fromarray(np.full((4, 4, 3), 100, np.uint8))
    out = np.asarray(cast_image(image, (0.5, 1.0, 3.0)))
    assert out[0, 0].tolist() == [50, 100, 255]  # clipped at 255


@pytest.mark.slow
def test_shift_report_against_the_processed_arrays(
    packaged_model_dir, processed_dir, raw_dir, tmp_path
):
    report = shift_report(
        packaged_model_dir,
        raw_dir,
        processed_dir,
        {"identity": (1.0, 1.0, 1.0), "isic_archive": ISIC_ARCHIVE_CAST},
        bootstrap={"n_resamples": 200},
    )
    model = load_packaged_model(packaged_model_dir)
    test = load_split(processed_dir, "test")
    expected = balanced_accuracy(
        test.labels, model.predict(np.asarray(test.images))[0].argmax(1), 7
    )
    assert report["n_images"] == len(test.labels) == 21
    assert report["no_cast"]["balanced_accuracy"] == pytest.approx(expected, abs=1e-4)
    identity = report["casts"]["identity"]
    assert identity["agreement_with_no_cast"] == 1.0 and identity["difference"]["delta"] == 0.0
    cast = report["casts"]["isic_archive"]
    assert cast["gains"] == [round(g, 4) for g in ISIC_ARCHIVE_CAST]
    assert cast["difference"]["delta"] == pytest.approx(
        cast["balanced_accuracy"] - report["no_cast"]["balanced_accuracy"], abs=2e-4
    )
    assert report["model"]["color_constancy"] == "none"

    out = tmp_path / "shift.json"
    args = [
        "--model",
        str(packaged_model_dir),
        "--raw",
        str(raw_dir),
        "--processed",
        str(processed_dir),
    ]
    assert main([*args, "--cast", "green=0.9,1.1,0.97", "--out", str(out)]) == 0
    assert list(json.loads(out.read_text())["casts"]) == ["green"]
    with pytest.raises(SystemExit):
        main([*args, "--cast", "bad=1,2"])
    # a changed contract instead of a cast: the same package on JPEG-draft pixels
    assert (
        main([*args, "--cast", "none", "--contract", "draft:jpeg_draft=true", "--out", str(out)])
        == 0
    )
    written = json.loads(out.read_text())
    assert written["casts"] == {}
    draft = written["contracts"]["draft"]
    assert draft["changes"] == {"jpeg_draft": True}
    assert draft["difference"]["delta"] == pytest.approx(
        draft["balanced_accuracy"] - written["no_cast"]["balanced_accuracy"], abs=2e-4
    )
    with pytest.raises(SystemExit):
        main([*args, "--contract", "draft:no_such_field=1"])
