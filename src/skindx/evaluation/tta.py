"""What test-time augmentation over the 8 dihedral views buys a packaged model on the test split:
the headline metrics without and with it, the lesion-grouped paired bootstrap of the balanced
accuracy difference (the promotion gate's test), and the inference time per image of each.

    python -m skindx.evaluation.tta --model models/candidate --processed data/processed \\
        --out reports/tta.json

Scores the package's ONNX graph (what serving runs), torch-free.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skindx.data.processed import load_split
from skindx.evaluation.bootstrap import BOOTSTRAP_DEFAULTS, paired_difference_from_settings
from skindx.evaluation.metrics import classification_report
from skindx.evaluation.predictions import read_split_table
from skindx.inference.metrics import PRIMARY_METRIC
from skindx.inference.model import load_packaged_model
from skindx.inference.tta import DIHEDRAL_VIEWS, plain_probabilities, tta_probabilities

HEADLINE = ("balanced_accuracy", "macro_f1", "melanoma_sensitivity", "roc_auc_macro", "accuracy")


def _timed(fn, *args, **kwargs) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def tta_report(
    model_dir: str | Path,
    processed_dir: str | Path,
    *,
    split: str = "test",
    n_resamples: int = int(BOOTSTRAP_DEFAULTS["n_resamples"]),
    seed: int = int(BOOTSTRAP_DEFAULTS["seed"]),
    threads: int | None = None,
) -> dict[str, Any]:
    """{plain, tta: headline metrics; difference: paired bootstrap of TTA - plain BMA; timing}."""
    model = load_packaged_model(model_dir, threads=threads)
    data = load_split(processed_dir, split)
    images = np.asarray(data.images)
    if images.shape[1] != model.contract.input_size:
        raise ValueError(
            f"{processed_dir} holds {images.shape[1]} px images, the package expects "
            f"{model.contract.input_size} px: preprocess with the package's contract"
        )
    lesions = [row["lesion_id"] for row in read_split_table(processed_dir, split)]
    classes = model.classes
    plain, plain_s = _timed(plain_probabilities, model, images)
    tta, tta_s = _timed(tta_probabilities, model, images)
    reports = {
        name: classification_report(data.labels, probs, classes)
        for name, probs in (("plain", plain), ("tta", tta))
    }
    diff = paired_difference_from_settings(
        data.labels,
        tta.argmax(axis=1),
        plain.argmax(axis=1),
        classes,
        groups=lesions,
        settings={"n_resamples": n_resamples, "seed": seed},
        metric=PRIMARY_METRIC,
    )
    n = len(images)
    return {
        "model": {"version": model.version, "input_size": model.contract.input_size},
        "split": split,
        "n_images": n,
        "views": DIHEDRAL_VIEWS,
        "plain": {k: reports["plain"][k] for k in HEADLINE},
        "tta": {k: reports["tta"][k] for k in HEADLINE},
        "difference": diff.to_dict(),
        "per_class_recall": {
            code: {
                "plain": reports["plain"]["per_class"][code]["recall"],
                "tta": reports["tta"]["per_class"][code]["recall"],
            }
            for code in classes
        },
        "timing_ms_per_image": {
            "plain": round(1000 * plain_s / max(n, 1), 3),
            "tta": round(1000 * tta_s / max(n, 1), 3),
            "threads": threads,
            "note": "batched ONNX Runtime on this machine, preprocessed arrays (no decoding)",
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/candidate"))
    parser.add_argument("--processed", type=Path, default=Path("data/processed"))
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--resamples", type=int, default=int(BOOTSTRAP_DEFAULTS["n_resamples"]))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/tta.json"))
    args = parser.parse_args(argv)
    report = tta_report(
        args.model,
        args.processed,
        split=args.split,
        n_resamples=args.resamples,
        threads=args.threads,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.name}.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(args.out)
    d = report["difference"]
    print(
        f"{report['split']} BMA {report['plain']['balanced_accuracy']:.3f} -> "
        f"{report['tta']['balanced_accuracy']:.3f} with {DIHEDRAL_VIEWS}-view TTA "
        f"(difference {d['delta']:+.3f}, {int(100 * d['confidence'])} % CI "
        f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], one-sided p {d['p_value']:.3f}); "
        f"{report['timing_ms_per_image']['plain']:.2f} -> "
        f"{report['timing_ms_per_image']['tta']:.2f} ms per image; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
