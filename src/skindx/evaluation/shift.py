"""Robustness to an acquisition colour shift, measured on the test split: every test image
decoded from data/raw, its channels multiplied by a colour cast (another dermatoscope's light
and camera), then put through the package's own preprocessing contract and model, as serving
would see it. Reports the balanced accuracy without and with each cast, with the lesion-grouped
bootstrap interval of each and the paired bootstrap of the difference.

    python -m skindx.evaluation.shift --model models/candidate --out reports/shift.json
    python -m skindx.evaluation.shift --cast none --contract draft:jpeg_draft=true

`--contract NAME:KEY=VALUE,...` scores the same package on pixels made under a changed contract
instead (e.g. JPEG draft decoding): the cost of serving a model with a preprocessing change it
was not trained with, paired against its own contract on the same images.

The default cast is the ratio of mean RGB of 767 ISIC-archive images to HAM10000's (183/151/140
against 199/138/144, measured for issue 13): external images are greener and less red. It is
a proxy for external data, which a user with such a folder measures directly with
`python -m skindx.evaluation.external`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from tqdm import tqdm

from skindx.data.arrays import load_resized
from skindx.data.ingest import read_metadata
from skindx.evaluation.bootstrap import (
    intervals_from_settings,
    paired_difference_from_settings,
)
from skindx.evaluation.metrics import balanced_accuracy
from skindx.evaluation.predictions import read_split_table
from skindx.inference.metrics import PRIMARY_METRIC
from skindx.inference.model import PackagedModel, load_packaged_model
from skindx.inference.preprocessing import PreprocessingContract

# mean RGB of the external ISIC-archive images over HAM10000's (issue 13)
ISIC_ARCHIVE_CAST = (183 / 199, 151 / 138, 140 / 144)


def cast_image(image: Image.Image, gains: Sequence[float]) -> Image.Image:
    """RGB `image` with each channel multiplied by its gain (clipped to 0-255)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) * np.asarray(gains, np.float32)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def model_pixels(
    model: PackagedModel,
    paths: Sequence[Path],
    gains: Sequence[float] | None,
    contract: PreprocessingContract | None = None,
) -> np.ndarray:
    """uint8 (N, S, S, 3): each image as the package's contract (or `contract`) turns it into
    model input, after the cast when `gains` is given."""
    contract = contract or model.contract
    out = np.empty((len(paths), contract.input_size, contract.input_size, 3), np.uint8)
    label = "no cast" if gains is None else "cast " + "/".join(f"{g:.3f}" for g in gains)
    cast = None if gains is None else (lambda image: cast_image(image, gains))
    for i, path in enumerate(tqdm(paths, desc=label, unit="img", mininterval=1.0)):
        out[i] = load_resized(path, contract, cast)  # the preprocess stage's loader
    return out


def predict_all(model: PackagedModel, pixels: np.ndarray, batch: int = 128) -> np.ndarray:
    return np.concatenate(
        [model.predict(pixels[i : i + batch])[0] for i in range(0, len(pixels), batch)]
    ).argmax(axis=1)


def shift_report(
    model_dir: str | Path,
    raw_dir: str | Path,
    processed_dir: str | Path,
    casts: dict[str, Sequence[float]],
    *,
    split: str = "test",
    bootstrap: dict[str, Any] | None = None,
    contracts: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`casts`: name -> RGB gains on the decoded image; `contracts`: name -> fields of the
    package's contract changed (dataclasses.replace) for the model's input. Each is paired
    against the package's own contract without a cast."""
    model = load_packaged_model(model_dir)
    classes = list(model.classes)
    rows = read_split_table(processed_dir, split)
    metadata = read_metadata(Path(raw_dir)).to_dict("records")
    files = {r["image_id"]: Path(raw_dir) / r["path"] for r in metadata}
    paths = [files[r["image_id"]] for r in rows]
    labels = np.array([int(r["label"]) for r in rows])
    lesions = [r["lesion_id"] for r in rows]
    settings = bootstrap  # evaluate.bootstrap's keys; defaults from skindx.evaluation.bootstrap

    def scored(predicted: np.ndarray) -> dict[str, Any]:
        interval = intervals_from_settings(
            labels, predicted, classes, groups=lesions, settings=settings
        )[PRIMARY_METRIC]
        return {
            PRIMARY_METRIC: round(float(balanced_accuracy(labels, predicted, len(classes))), 4),
            "ci_low": interval.low,
            "ci_high": interval.high,
        }

    plain = predict_all(model, model_pixels(model, paths, None))

    def versus_plain(predicted: np.ndarray) -> dict[str, Any]:
        diff = paired_difference_from_settings(
            labels,
            predicted,
            plain,
            classes,
            groups=lesions,
            settings=settings,
            metric=PRIMARY_METRIC,
        )
        return {
            **scored(predicted),
            "difference": diff.to_dict(),
            "agreement_with_no_cast": round(float(np.mean(predicted == plain)), 4),
        }

    report: dict[str, Any] = {
        "model": {
            "version": model.version,
            "color_constancy": model.contract.color_constancy,
        },
        "split": split,
        "n_images": len(paths),
        "no_cast": scored(plain),
        "casts": {},
    }
    for name, gains in casts.items():
        shifted = predict_all(model, model_pixels(model, paths, gains))
        report["casts"][name] = {
            "gains": [round(float(g), 4) for g in gains],
            **versus_plain(shifted),
        }
    for name, changes in (contracts or {}).items():
        changed = dataclasses.replace(model.contract, **changes)
        shifted = predict_all(model, model_pixels(model, paths, None, changed))
        report.setdefault("contracts", {})[name] = {"changes": changes, **versus_plain(shifted)}
    return report


def _cast(text: str) -> tuple[str, tuple[float, ...]]:
    if text == "none":
        return "none", ()
    name, _, gains = text.partition("=")
    values = tuple(float(v) for v in gains.split(","))
    if not name or len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"--cast NAME=R,G,B with three positive gains, got {text!r}"
        )
    return name, values


def _contract_change(text: str) -> tuple[str, dict[str, Any]]:
    name, _, assignments = text.partition(":")
    fields = PreprocessingContract.__dataclass_fields__
    changes: dict[str, Any] = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise argparse.ArgumentTypeError(
                f"--contract NAME:KEY=VALUE,... with KEY one of {sorted(fields)}, got {text!r}"
            )
        changes[key] = yaml.safe_load(value)  # true -> True, 6 -> 6, shades_of_gray -> str
    if not name or not changes:
        raise argparse.ArgumentTypeError(f"--contract NAME:KEY=VALUE,..., got {text!r}")
    return name, changes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/candidate"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--processed", type=Path, default=Path("data/processed"))
    parser.add_argument(
        "--cast",
        type=_cast,
        action="append",
        help="NAME=R,G,B channel gains (repeatable); default: isic_archive="
        + ",".join(f"{g:.4f}" for g in ISIC_ARCHIVE_CAST),
    )
    parser.add_argument(
        "--contract",
        type=_contract_change,
        action="append",
        help="NAME:KEY=VALUE,... a changed preprocessing contract to score the package under "
        "(repeatable), e.g. draft:jpeg_draft=true",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/shift.json"))
    args = parser.parse_args(argv)
    casts = dict(args.cast or [("isic_archive", ISIC_ARCHIVE_CAST)])
    casts.pop("none", None)  # --cast none: no cast, e.g. with --contract alone
    report = shift_report(
        args.model, args.raw, args.processed, casts, contracts=dict(args.contract or [])
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.name}.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(args.out)
    print(f"no cast: BMA {report['no_cast'][PRIMARY_METRIC]:.3f}")
    for name, row in [*report["casts"].items(), *report.get("contracts", {}).items()]:
        d = row["difference"]
        print(
            f"{name}: BMA {row[PRIMARY_METRIC]:.3f} (difference {d['delta']:+.3f}, "
            f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]), agreement {row['agreement_with_no_cast']:.3f}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
