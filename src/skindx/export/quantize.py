"""INT8 serving: ONNX Runtime static quantization of a package's model.onnx, accepted only when
it keeps the test split's balanced accuracy within `max_bma_drop` of the fp32 graph.

The recipe: QDQ format, per-channel int8 weights, uint8 activations calibrated on training
images (never test) at their 99.99th percentile; the stem convolution and the classifier head
stay fp32 (docs/results.md#int8-serving-on-the-seed-42-model has what it costs the demo model).

    python -m skindx.export.quantize --model models/candidate --processed data/processed \\
        --out models/candidate-int8

The output is an ordinary package (serving needs nothing new): the int8 model.onnx, the test
predictions rewritten from the int8 graph (so promote's paired test compares what is served),
and the card's `export.quantization` with both BMAs, the agreement, the out-of-distribution
rejection rates and the timing, resealed. A refusal writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skindx.data.processed import load_split
from skindx.evaluation.metrics import balanced_accuracy
from skindx.evaluation.predictions import PREDICTIONS_FILE, read_split_table, write_predictions
from skindx.export.card import file_hashes, write_card
from skindx.export.ood import summary
from skindx.export.package import write_report
from skindx.inference.model import (
    CARD_FILE,
    INPUT_NAME,
    ONNX_FILE,
    PackagedModel,
    create_session,
    load_packaged_model,
)
from skindx.inference.preprocessing import normalize

DEFAULT_MAX_BMA_DROP = 0.005  # half a point of test balanced accuracy
DEFAULT_CALIBRATION_IMAGES = 256
CALIBRATION_PERCENTILE = 99.99
CALIBRATION_BATCH = 32


class QuantizationRefused(RuntimeError):
    """INT8 loses more test balanced accuracy than allowed: keep the fp32 package. `report`:
    the measurements that refused it (the package stage writes them into its report)."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


def _calibration_reader(batches: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return Reader()


def quantize_graph(
    model: PackagedModel, onnx_path: Path, calibration: np.ndarray, out_path: Path
) -> Path:
    """The int8 QDQ graph of `onnx_path`, calibrated on uint8 (N, S, S, 3) images."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="skindx-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared))
        nodes = onnx.load(str(prepared)).graph.node
        convs = [n.name for n in nodes if n.op_type == "Conv"]
        heads = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
        x = normalize(calibration, model.contract)
        size = CALIBRATION_BATCH if len(x) >= CALIBRATION_BATCH else len(x)
        if len(x) % size:
            raise ValueError(
                f"{len(x)} calibration images: use a multiple of {size} (the calibrator "
                "stacks the batches' activations, so every batch must have the same size)"
            )
        batches = [x[i : i + size] for i in range(0, len(x), size)]
        quantize_static(
            str(prepared),
            str(out_path),
            _calibration_reader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            nodes_to_exclude=[*convs[:1], *heads],  # the stem and the head stay fp32
            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
        )
    return out_path


def _refit_ood(int8: PackagedModel, onnx_path: Path, train, processed_dir: Path):
    """The out-of-distribution scorer fitted again, as the package stage fits it, on the int8
    graph's pooled features: quantization moves them enough that the fp32 scorer's whitened
    distances call every test image out of distribution (seen on the demo model)."""
    from skindx.export.ood import OodFitData, fit_and_report
    from skindx.inference.ood import DEFAULT_PASS_RATE

    data = OodFitData(
        train_images=np.asarray(train.images),
        train_labels=train.labels,
        val_images=np.asarray(load_split(processed_dir, "val").images),
        test_images=np.asarray(load_split(processed_dir, "test").images),
        pass_rate=float(
            int8.ood.info.get("threshold_on", {}).get("pass_rate_target", DEFAULT_PASS_RATE)
        ),
    )
    stages = {stage.name: stage.channels for stage in int8.ood.stages}
    scorer, report = fit_and_report(
        onnx_path, int8.contract, data, stages=stages, n_classes=len(int8.classes)
    )
    scorer.info["evaluation"] = summary(report)
    return dataclasses.replace(int8, ood=scorer), report


def _scored(
    model: PackagedModel, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(probabilities, in-distribution flags or None, ms per image), batched."""
    probs, inside = [], []
    started = time.perf_counter()
    for start in range(0, len(images), 64):
        out = model.analyse(images[start : start + 64])
        probs.append(out.probabilities)
        if out.in_distribution is not None:
            inside.append(out.in_distribution)
    elapsed = time.perf_counter() - started
    flags = np.concatenate(inside) if inside else None
    return np.concatenate(probs), flags, 1000 * elapsed / max(len(images), 1)


def quantize_package(
    model_dir: str | Path,
    processed_dir: str | Path,
    out_dir: str | Path,
    *,
    max_bma_drop: float = DEFAULT_MAX_BMA_DROP,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    seed: int = 0,
    ood_report: str | Path | None = None,
) -> dict[str, Any]:
    """Write the int8 package into `out_dir` and return its report; QuantizationRefused (and
    nothing written) when it loses more than `max_bma_drop` of test balanced accuracy.
    `ood_report`: where to write the refit out-of-distribution scorer's full report (per-probe
    scores, as the package stage writes paths.ood_report), once the int8 package is accepted."""
    model_dir, processed_dir, out_dir = Path(model_dir), Path(processed_dir), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists: remove it or choose another --out")
    model = load_packaged_model(model_dir)
    train = load_split(processed_dir, "train")
    test = load_split(processed_dir, "test")
    test_images = np.asarray(test.images)
    if test_images.shape[1] != model.contract.input_size:
        raise ValueError(
            f"{processed_dir} holds {test_images.shape[1]} px images, the package expects "
            f"{model.contract.input_size} px: preprocess with the package's contract"
        )
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(train.images), min(calibration_images, len(train.images)), False)
    if len(picks) > CALIBRATION_BATCH:  # whole batches (quantize_graph): drop the remainder
        picks = picks[: len(picks) - len(picks) % CALIBRATION_BATCH]
    picks = np.sort(picks)
    calibration = np.asarray(train.images)[picks]

    staging = Path(tempfile.mkdtemp(prefix=".skindx-int8-", dir=out_dir.parent))
    try:
        package = Path(shutil.copytree(model_dir, staging / "package"))
        quantize_graph(model, model_dir / ONNX_FILE, calibration, staging / "int8.onnx")
        int8 = dataclasses.replace(model, session=create_session(staging / "int8.onnx"))
        refit_report = None
        stale_rejection = None
        if model.ood is not None:  # refit on the int8 graph's own pooled features
            _, stale, _ = _scored(int8, test_images)  # why: the fp32 scorer on int8 features
            stale_rejection = round(float(1 - stale.mean()), 4)
            int8, refit_report = _refit_ood(int8, staging / "int8.onnx", train, processed_dir)
        classes = model.classes
        fp32_probs, fp32_inside, fp32_ms = _scored(model, test_images)
        int8_probs, int8_inside, int8_ms = _scored(int8, test_images)
        bma = {
            "fp32": balanced_accuracy(test.labels, fp32_probs.argmax(1), len(classes)),
            "int8": balanced_accuracy(test.labels, int8_probs.argmax(1), len(classes)),
        }
        drop = bma["fp32"] - bma["int8"]
        report = {
            "method": "onnxruntime static, QDQ, per-channel int8 weights, uint8 activations, "
            f"percentile {CALIBRATION_PERCENTILE} calibration; stem conv and head kept fp32",
            "calibration_images": int(len(calibration)),
            "calibration_split": "train",
            "test_images": int(len(test_images)),
            "balanced_accuracy_fp32": round(float(bma["fp32"]), 4),
            "balanced_accuracy_int8": round(float(bma["int8"]), 4),
            "balanced_accuracy_drop": round(float(drop), 4),
            "max_balanced_accuracy_drop": float(max_bma_drop),
            "argmax_agreement": round(
                float(np.mean(fp32_probs.argmax(1) == int8_probs.argmax(1))), 4
            ),
            "max_abs_probability_diff": round(float(np.abs(fp32_probs - int8_probs).max()), 4),
            "ood_test_rejection_fp32": None
            if fp32_inside is None
            else round(float(1 - fp32_inside.mean()), 4),
            "ood_test_rejection_int8": None
            if int8_inside is None
            else round(float(1 - int8_inside.mean()), 4),
            "ms_per_image_fp32": round(fp32_ms, 2),
            "ms_per_image_int8": round(int8_ms, 2),
            "timing": "batches of 64 preprocessed test images, this machine's default threads",
        }
        if refit_report is not None:
            report["ood_test_rejection_int8_with_fp32_scorer"] = stale_rejection
            report["ood_refit"] = summary(refit_report)
        if drop > max_bma_drop:
            raise QuantizationRefused(
                f"INT8 loses {drop:.4f} test balanced accuracy ({bma['fp32']:.4f} -> "
                f"{bma['int8']:.4f}), more than the allowed {max_bma_drop:g}: keep serving the "
                "fp32 package, or calibrate on more images (--calibration-images)",
                report,
            )
        shutil.copyfile(staging / "int8.onnx", package / ONNX_FILE)
        table = read_split_table(processed_dir, "test")
        write_predictions(
            package / PREDICTIONS_FILE,
            image_ids=[r["image_id"] for r in table],
            lesion_ids=[r["lesion_id"] for r in table],
            labels=test.labels,
            probs=int8_probs,
            classes=classes,
        )
        card = json.loads((package / CARD_FILE).read_text())
        card["version"] = f"{card['version']}-int8"
        card.setdefault("export", {})["quantization"] = report
        if int8.ood is not None and model.ood is not None:
            for name in model.ood.files:  # the fp32 graph's scorer, replaced by the refit one
                (package / name).unlink(missing_ok=True)
            int8.ood.save(package)
            card["ood"] = int8.ood.to_dict()
        card["files"] = file_hashes(package)
        write_card(card, package)
        load_packaged_model(package)  # sealed and servable, or this raises
        package.rename(out_dir)
        if ood_report is not None and refit_report is not None:
            write_report(Path(ood_report), refit_report)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/candidate"))
    parser.add_argument("--processed", type=Path, default=Path("data/processed"))
    parser.add_argument("--out", type=Path, required=True, help="the int8 package (a new folder)")
    parser.add_argument("--max-bma-drop", type=float, default=DEFAULT_MAX_BMA_DROP)
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES)
    parser.add_argument("--report", type=Path, help="also write the report here (JSON)")
    args = parser.parse_args(argv)
    try:
        report = quantize_package(
            args.model,
            args.processed,
            args.out,
            max_bma_drop=args.max_bma_drop,
            calibration_images=args.calibration_images,
        )
    except (QuantizationRefused, FileExistsError, ValueError, FileNotFoundError) as exc:
        print(f"quantize: refused: {exc}")
        return 1
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"quantize: wrote {args.out}: test BMA {report['balanced_accuracy_fp32']:.4f} (fp32) -> "
        f"{report['balanced_accuracy_int8']:.4f} (int8), agreement {report['argmax_agreement']:.3f}, "
        f"{report['ms_per_image_fp32']:.2f} -> {report['ms_per_image_int8']:.2f} ms per image"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
