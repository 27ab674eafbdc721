"""Plot data for DVC and PNG figures."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from skindx.evaluation.metrics import softmax
from skindx.evaluation.plots import save_figures, write_plot_data

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def _case(n=70):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(7), n // 7)
    logits = rng.normal(size=(n, 7)) + 2 * np.eye(7)[y]
    return y, softmax(logits), softmax(logits, 2.0)


def _rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_plot_data_files(tmp_path):
    y, probs, calibrated = _case()
    write_plot_data(tmp_path, y, probs, calibrated, CLASSES, 15)
    confusion = _rows(tmp_path / "confusion.csv")
    assert len(confusion) == len(y)
    assert confusion[0]["actual"] == "akiec" and confusion[0]["predicted"] in CLASSES
    assert sum(r["actual"] == r["predicted"] for r in confusion) == int(
        (probs.argmax(1) == y).sum()
    )
    for code in CLASSES:
        roc = _rows(tmp_path / "roc" / f"{code}.csv")
        assert (float(roc[0]["fpr"]), float(roc[0]["tpr"])) == (0.0, 0.0)
        assert (float(roc[-1]["fpr"]), float(roc[-1]["tpr"])) == (1.0, 1.0)
        assert all(float(a["fpr"]) <= float(b["fpr"]) for a, b in zip(roc, roc[1:], strict=False))
    for variant in ("uncalibrated", "calibrated"):
        table = _rows(tmp_path / "reliability" / f"{variant}.csv")
        assert sum(int(r["count"]) for r in table) == len(y)


def test_figures_are_png(tmp_path):
    y, probs, calibrated = _case()
    paths = save_figures(
        tmp_path, y, probs, calibrated, CLASSES, temperature=2.0, ece_before=0.1, ece_after=0.05
    )
    assert sorted(p.name for p in paths) == ["confusion_matrix.png", "reliability.png", "roc.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300
