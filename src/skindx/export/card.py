"""The model card (`model.json`): what the model is, how to feed it, how good it is, where it
comes from, the sha256 of every file beside it, and the usual model-card text sections."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from skindx.inference.classes import CLASS_CODES, CLASS_INFO
from skindx.inference.model import (
    CAM_HEAD_FILE,
    CARD_DIGEST_KEY,
    CARD_FILE,
    EXPORTED_OUTPUTS,
    card_digest,
    sha256_file,
)
from skindx.inference.preprocessing import PreprocessingContract

CITATION = (
    "Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of "
    "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 "
    "(2018). doi:10.1038/sdata.2018.161"
)

INTENDED_USE = {
    "summary": "Research and education: classify a dermatoscopic image of a pigmented skin "
    "lesion into one of the seven HAM10000 diagnostic categories, with calibrated "
    "probabilities and a class activation map showing which regions drove the prediction.",
    "users": "ML engineers and researchers; clinicians only as a second opinion in studies.",
    "inputs": "One dermatoscopic (not clinical/smartphone) RGB image of a single lesion.",
    "out_of_scope": [
        "diagnosis, triage or treatment decisions for any patient",
        "non-dermatoscopic photographs, non-skin images, or lesions outside the 7 classes",
        "populations unlike the training data (e.g. darker skin types, children)",
    ],
}
NOT_A_MEDICAL_DEVICE = (
    "This model is NOT a medical device. It has not been cleared or approved by any regulator "
    "(no CE mark, no FDA clearance), has not been clinically validated, and must not be used "
    "to diagnose, rule out or triage skin cancer. Anyone worried about a skin lesion should "
    "see a dermatologist."
)
LIMITATIONS = [
    "Trained on HAM10000 only: mostly fair-skinned patients from Austria and Australia, "
    "dermatoscopic images from a few devices; performance elsewhere is unknown.",
    "Class imbalance: nv is about two thirds of the data; df, vasc and akiec have a few "
    "hundred images or fewer, so their estimates are the least reliable.",
    "Test metrics come from a lesion-grouped hold-out split of the same dataset, not from an "
    "external or prospective clinical study.",
    "Seven classes only: any other lesion (e.g. squamous cell carcinoma outside akiec, "
    "non-lesion images) is still forced into one of them.",
    "Images are downscaled to the contract's input size; fine structure may be lost.",
    "Probabilities are calibrated with one temperature on the validation split; calibration "
    "may not transfer to other data.",
    "The class activation map shows where the evidence is, not why; it is no proof of a "
    "correct decision.",
]


def training_data(data_hash: str | None = None, feedback_cases: int = 0) -> dict[str, Any]:
    """`feedback_cases`: reviewed cases from the prediction log added to the training split
    (lineage.feedback says from which review window)."""
    return {
        "dataset": "HAM10000 (ISIC 2018 Task 3 training set)",
        "dataset_size": 10015,
        "licence": "CC BY-NC 4.0 (non-commercial use, with attribution)",
        "licence_url": "https://creativecommons.org/licenses/by-nc/4.0/",
        "citation": CITATION,
        "doi": "10.1038/sdata.2018.161",
        "split": "train/val/test grouped by lesion_id (no lesion in two splits), stratified by dx",
        "data_hash": data_hash,
        "feedback_cases": int(feedback_cases),
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def default_version() -> str:
    """A timestamp id for a package that has no registry version (yet)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def file_hashes(directory: str | Path) -> dict[str, str]:
    """{filename: sha256} for every file in `directory` except the card itself."""
    directory = Path(directory)
    return {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != CARD_FILE
    }


def uncertainty(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Below `threshold` (calibrated top-1 probability, chosen on validation by evaluate) a
    prediction is to be marked uncertain; with the test coverage and selective accuracy.
    `tta`: the same for answers averaged over the 8 views, when evaluate measured them
    (evaluate.tta); serving applies it to those answers."""
    selective = (metrics or {}).get("selective")
    if not isinstance(selective, dict) or selective.get("threshold") is None:
        return None
    card = _uncertainty(selective)
    tta = ((metrics or {}).get("tta") or {}).get("selective")
    if isinstance(tta, dict) and tta.get("threshold") is not None:
        card["tta"] = _uncertainty(tta)
    return card


def _uncertainty(selective: dict[str, Any]) -> dict[str, Any]:
    return {
        "threshold": float(selective["threshold"]),
        "score": selective.get("score", "calibrated top-1 probability"),
        "chosen_on": selective.get("chosen_on", "validation"),
        "target_accuracy": selective.get("target_accuracy"),
        "target_met": selective.get("target_met"),
        "test_coverage": selective.get("coverage"),
        "test_selective_accuracy": selective.get("accuracy"),
    }


def build_card(
    *,
    name: str,
    version: str,
    contract: PreprocessingContract,
    temperature: float,
    metrics: dict[str, Any] | None,
    lineage: dict[str, Any] | None,
    architecture: dict[str, Any],
    files: dict[str, str],
    export: dict[str, Any] | None = None,
    classes: tuple[str, ...] = CLASS_CODES,
    ood: dict[str, Any] | None = None,
    cam: dict[str, Any] | None = None,
) -> dict[str, Any]:
    extra = dict(lineage or {})
    core = {key: extra.pop(key, None) for key in ("git_commit", "mlflow_run_id", "data_hash")}
    core["params"] = extra.pop("params", None) or {}
    return {
        "name": name,
        "version": str(version),
        "created": now_iso(),
        "classes": [CLASS_INFO[code].to_dict() for code in classes],
        "preprocessing": contract.to_dict(),
        "temperature": float(temperature),
        "metrics": metrics or {},
        "uncertainty": uncertainty(metrics),
        # the out-of-distribution scorer (skindx.inference.ood): method, threshold, its files
        # (listed in `files` like the rest) and its AUROC against non-dermoscopy probe images
        "ood": ood,
        "lineage": {**core, **extra},
        "architecture": architecture,
        "export": export or {},
        "files": files,
        "outputs": list(EXPORTED_OUTPUTS),
        "cam": {
            "head": CAM_HEAD_FILE,
            "layout": "[C, K+1] float32: fc weight W[c, k] in columns :K, bias in column K",
            "formula": "CAM_c = ReLU(sum_k W[c, k] * features[k]), upsampled, min-max scaled",
            # which feature map /explain uses (layer3 through cam.onnx when layer4 is too coarse)
            **(cam or {"layer": "layer4"}),
        },
        "intended_use": INTENDED_USE,
        "not_a_medical_device": NOT_A_MEDICAL_DEVICE,
        "training_data": training_data(
            core["data_hash"], (extra.get("feedback") or {}).get("n_cases") or 0
        ),
        "limitations": LIMITATIONS,
    }


def write_card(card: dict[str, Any], directory: str | Path) -> Path:
    """Write model.json atomically (a reader never sees half a card), sealed with the digest of
    its content (`card_sha256`, set in `card` too)."""
    # digest what a reader will load (tuples become lists, unknown types strings)
    card[CARD_DIGEST_KEY] = card_digest(json.loads(json.dumps(card, default=str)))
    path = Path(directory) / CARD_FILE
    tmp = path.with_name(f".{CARD_FILE}.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path
