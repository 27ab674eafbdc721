"""Evaluation figures: CSV data series for `dvc plots` and PNGs for people and MLflow.

Files written under `plots_dir` (reports/plots):
  confusion.csv                 actual,predicted (one row per test image; DVC confusion template)
  roc/<class>.csv               fpr,tpr (one file per class, overlaid by dvc.yaml's ROC plot)
  reliability/<variant>.csv     bin,confidence,accuracy,count (uncalibrated and calibrated)
  images/confusion_matrix.png, images/roc.png, images/reliability.png
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

from skindx.evaluation.metrics import confusion_matrix, reliability_table, roc_auc, roc_curve


def _write_csv(path: Path, header: Sequence[str], rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_plot_data(
    plots_dir: Path,
    y_true: np.ndarray,
    probs: np.ndarray,
    calibrated_probs: np.ndarray,
    classes: Sequence[str],
    n_bins: int = 15,
) -> list[Path]:
    plots_dir = Path(plots_dir)
    y_pred = probs.argmax(axis=1)
    written = [
        _write_csv(
            plots_dir / "confusion.csv",
            ["actual", "predicted"],
            ((classes[t], classes[p]) for t, p in zip(y_true, y_pred, strict=True)),
        )
    ]
    for c, code in enumerate(classes):
        fpr, tpr = roc_curve(y_true == c, probs[:, c])
        rows = ((f"{f:.6f}", f"{t:.6f}") for f, t in zip(fpr, tpr, strict=True))
        written.append(_write_csv(plots_dir / "roc" / f"{code}.csv", ["fpr", "tpr"], rows))
    for variant, p in (("uncalibrated", probs), ("calibrated", calibrated_probs)):
        table = reliability_table(y_true, p, n_bins)
        rows = (
            (r["bin"], f"{r['confidence']:.6f}", f"{r['accuracy']:.6f}", r["count"]) for r in table
        )
        written.append(
            _write_csv(
                plots_dir / "reliability" / f"{variant}.csv",
                ["bin", "confidence", "accuracy", "count"],
                rows,
            )
        )
    return written


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> Figure:
    """Row-normalised (recall) colours, with the counts written in each cell."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(6.5, 5.5), dpi=120)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class (recall on the diagonal)")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    return fig


def roc_figure(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> Figure:
    fig = Figure(figsize=(6.5, 5.5), dpi=120)
    ax = fig.subplots()
    aucs = []
    for c, code in enumerate(classes):
        auc = roc_auc(y_true == c, probs[:, c])
        if np.isnan(auc):
            continue
        aucs.append(auc)
        fpr, tpr = roc_curve(y_true == c, probs[:, c])
        ax.plot(fpr, tpr, lw=1.5, label=f"{code} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (sensitivity)")
    macro = f"macro AUC {np.mean(aucs):.3f}" if aucs else "no AUC (one class only)"
    ax.set_title(f"One-vs-rest ROC (test), {macro}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_figure(
    y_true: np.ndarray,
    probs: np.ndarray,
    calibrated_probs: np.ndarray,
    *,
    temperature: float,
    ece_before: float,
    ece_after: float,
    n_bins: int = 15,
) -> Figure:
    fig = Figure(figsize=(6.5, 5.5), dpi=120)
    ax = fig.subplots()
    width = 1.0 / n_bins
    for p, label, colour, offset in (
        (probs, f"uncalibrated (ECE {ece_before:.3f})", "tab:red", -0.25),
        (calibrated_probs, f"T = {temperature:.2f} (ECE {ece_after:.3f})", "tab:blue", 0.25),
    ):
        table = reliability_table(y_true, p, n_bins)
        centres = [r["bin_lower"] + width * (0.5 + offset) for r in table]
        ax.bar(
            centres,
            [r["accuracy"] for r in table],
            width=width / 2,
            color=colour,
            alpha=0.75,
            label=label,
        )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"confidence of the top class ({n_bins} bins)")
    ax.set_ylabel("accuracy in bin")
    ax.set_title("Reliability diagram (test)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def save_figures(
    images_dir: Path,
    y_true: np.ndarray,
    probs: np.ndarray,
    calibrated_probs: np.ndarray,
    classes: Sequence[str],
    *,
    temperature: float,
    ece_before: float,
    ece_after: float,
    n_bins: int = 15,
) -> list[Path]:
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "confusion_matrix.png": confusion_figure(y_true, probs.argmax(axis=1), classes),
        "roc.png": roc_figure(y_true, probs, classes),
        "reliability.png": reliability_figure(
            y_true,
            probs,
            calibrated_probs,
            temperature=temperature,
            ece_before=ece_before,
            ece_after=ece_after,
            n_bins=n_bins,
        ),
    }
    paths = []
    for name, fig in figures.items():
        fig.savefig(images_dir / name)
        paths.append(images_dir / name)
    return paths
