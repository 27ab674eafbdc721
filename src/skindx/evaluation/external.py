"""External validation: score a labelled folder of your own as the served model sees it.

A model that scores well on its own test split can still fail on images from another clinic,
camera or archive (the demo model: BMA 0.32 on 767 ISIC-archive images). This module measures
that, on a folder in any layout ingest recognises (skindx.data.sources.read_labelled_folder: a
metadata CSV with image_id and dx, an ISIC one-hot ground-truth CSV, or a folder per class):

- Against a package (`--model DIR`, the `external` DVC stage on the candidate): each file goes
  through exactly what the API does with an upload (skindx.inference: decode_image with the
  API's default limits, EXIF orientation, resize_to_contract, the ONNX model, the card's
  temperature, uncertainty threshold and out-of-distribution scorer). No torch.
- Against a running API (`--api URL`): the files are posted to /predict/batch in chunks (a file
  at a time to /predict when a whole chunk is refused), so that a deployed model is checked on
  the data it will really see. Both modes give the same report (tests/evaluation/test_external).

Images the model was developed on are left out and counted: ids or lesion ids in the processed
splits (train, val and test: val chose the checkpoint and thresholds, test is the internal
estimate, neither is external), or the same bytes as an ingested image of those splits (a
renamed copy). Images whose label is not one of the seven classes (ISIC 2019's SCC, UNK) are
left out and counted by label.

The report: n_images scored, accuracy, balanced accuracy over the classes present, per-class
recall (95 % bootstrap intervals, lesions resampled when the folder has lesion ids), the
confusion matrix, the out-of-distribution rate (null when the package has no scorer) and the
uncertain rate.

    python -m skindx.evaluation.external FOLDER                  # the served package
    python -m skindx.evaluation.external FOLDER --api http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from skindx.data.sources import LabelledFolder, read_labelled_folder
from skindx.evaluation.bootstrap import (
    BOOTSTRAP_DEFAULTS,
    CI_HIGH,
    CI_LOW,
    intervals_from_settings,
)
from skindx.evaluation.metrics import (
    MELANOMA,
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    per_class_scores,
)
from skindx.inference.classes import CLASS_CODES
from skindx.inference.hashing import sha256_bytes
from skindx.inference.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    ImageDecodeError,
    decode_image,
)
from skindx.inference.preprocessing import resize_to_contract

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")  # data/processed/splits/<split>.csv: the model's own data
OOD_REFUSAL = "not_dermoscopic"  # the API's 422 code when it rejects out-of-distribution uploads
METRIC_PREFIX = "external_"  # MLflow: external_balanced_accuracy, external_recall_mel, ...
PREDICTION_COLUMNS = (
    "image_id",
    "lesion_id",
    "dx",
    "label",
    "status",
    "predicted",
    "confidence",
    "uncertain",
    "ood_score",
    "in_distribution",
    "error",
)
MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
RETRY_STATUSES = (429, 503)  # nginx's rate limit; the API's full queue or a model still loading


class ExternalError(RuntimeError):
    """The folder, the model or the API cannot be used; the message says what to do."""


# --- what the model was developed on ------------------------------------------------------------
@dataclass(frozen=True)
class KnownImages:
    """The images of the model's own splits: image id, lesion id and content hash -> split."""

    ids: dict[str, str]
    lesions: dict[str, str]
    hashes: dict[str, str]
    source: str

    @classmethod
    def from_project(cls, processed_dir: Path, raw_dir: Path | None = None) -> KnownImages | None:
        """From `processed_dir/splits/*.csv` (ids, lesions) and `raw_dir/metadata.csv` (the
        sha256 of each ingested image); None when there are no splits to read."""
        splits_dir = Path(processed_dir) / "splits"
        ids: dict[str, str] = {}
        lesions: dict[str, str] = {}
        found = False
        for split in SPLITS:
            path = splits_dir / f"{split}.csv"
            if not path.is_file():
                continue
            found = True
            table = pd.read_csv(path, dtype=str)
            for image_id, lesion_id in zip(
                table.get("image_id", []), table.get("lesion_id", [None] * len(table)), strict=True
            ):
                ids.setdefault(str(image_id), split)
                if isinstance(lesion_id, str) and lesion_id:
                    lesions.setdefault(lesion_id, split)
        if not found:
            return None
        hashes: dict[str, str] = {}
        metadata = Path(raw_dir) / "metadata.csv" if raw_dir is not None else None
        if metadata is not None and metadata.is_file():
            raw = pd.read_csv(metadata, dtype=str, usecols=lambda c: c in ("image_id", "sha256"))
            if {"image_id", "sha256"} <= set(raw.columns):
                for image_id, digest in zip(raw["image_id"], raw["sha256"], strict=True):
                    if isinstance(digest, str) and image_id in ids:
                        hashes.setdefault(digest, ids[image_id])
        return cls(ids, lesions, hashes, str(splits_dir))


def select_images(
    folder: LabelledFolder, known: KnownImages | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The folder's table with `status` (`kept` or `excluded:<reason>`), `sha256` and
    `split` (the split of the model's data it matched), and the exclusion counts."""
    table = folder.table.copy().reset_index(drop=True)
    status = pd.Series("kept", index=table.index, dtype=object)
    split = pd.Series(None, index=table.index, dtype=object)
    status[table["source_path"].isna()] = "excluded:missing_image"
    duplicated = table["image_id"].duplicated(keep="first") & (status == "kept")
    status[duplicated] = "excluded:duplicate_id"
    digests: list[str | None] = []
    for path, state in zip(table["source_path"], status, strict=True):
        if state != "kept":
            digests.append(None)
            continue
        try:
            digests.append(sha256_bytes(Path(path).read_bytes()))
        except OSError:
            digests.append(None)
    table["sha256"] = digests
    if known is not None:
        for row in table.itertuples():
            if status[row.Index] != "kept":
                continue
            lesion = row.lesion_id if isinstance(row.lesion_id, str) else None
            for reason, hit in (
                ("image_id", known.ids.get(row.image_id)),
                ("lesion_id", known.lesions.get(lesion) if lesion else None),
                ("same_bytes", known.hashes.get(row.sha256) if row.sha256 else None),
            ):
                if hit is not None:
                    status[row.Index], split[row.Index] = f"excluded:training_{reason}", hit
                    break
    unknown = (status == "kept") & table["label"].isna()
    status[unknown] = "excluded:unknown_label"
    table["status"], table["split"] = status, split

    training = table[status.str.startswith("excluded:training_")]
    in_training: dict[str, Any] | None = None
    if known is not None:
        by_reason = Counter(s.removeprefix("excluded:training_") for s in training["status"])
        in_training = {
            "total": len(training),
            "by": {r: int(by_reason.get(r, 0)) for r in ("image_id", "lesion_id", "same_bytes")},
            "by_split": {s: int((training["split"] == s).sum()) for s in SPLITS},
            "source": known.source,
        }
    unknown_labels = Counter(str(v) for v in table.loc[status == "excluded:unknown_label", "dx"])
    excluded = {
        "total": int((status != "kept").sum()),
        "in_training_data": in_training,
        "unknown_label": {
            "count": int(unknown.sum()),
            "labels": dict(sorted(unknown_labels.items())),
        },
        "missing_image": int((status == "excluded:missing_image").sum()),
        "duplicate_id": int((status == "excluded:duplicate_id").sum()),
    }
    return table, excluded


# --- scoring ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What the model (or the API) answered for one image; `error` set when it was refused."""

    predicted: str | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    ood_score: float | None = None
    in_distribution: bool | None = None
    error: str | None = None  # the API's error code: corrupt_image, not_dermoscopic, ...
    detail: str | None = None


@dataclass
class PackageScorer:
    """Score files with a packaged model exactly as the API scores uploads (torch-free)."""

    model_dir: Path
    batch_size: int = 32
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE
    threads: int | None = None
    mode: str = field(default="package", init=False)

    def __post_init__(self) -> None:
        from skindx.inference.model import ModelIntegrityError, load_packaged_model

        self.model_dir = Path(self.model_dir)
        try:
            self.model = load_packaged_model(self.model_dir, threads=self.threads)
        except ModelIntegrityError as exc:
            raise ExternalError(
                f"{exc} (score another package with --model DIR, or a running API with --api URL)"
            ) from exc
        if list(self.model.classes) != list(CLASS_CODES):
            raise ExternalError(
                f"the model in {self.model_dir} has the classes {self.model.classes}, not "
                f"SkinDX's {list(CLASS_CODES)}"
            )
        self.threshold = (self.model.card.get("uncertainty") or {}).get("threshold")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.model.name,
            "version": self.model.version,
            "location": str(self.model_dir),
        }

    def _decode(self, path: Path) -> np.ndarray | Outcome:
        try:
            decoded = decode_image(
                Path(path).read_bytes(),
                max_pixels=self.max_pixels,
                min_side=self.min_side,
                contract=self.model.contract,  # as the API decodes (jpeg_draft)
            )
        except ImageDecodeError as exc:
            return Outcome(error=exc.code, detail=exc.detail)
        except OSError as exc:
            return Outcome(error="unreadable_file", detail=str(exc))
        return resize_to_contract(decoded.image, self.model.contract)

    def _run(self, pixels: np.ndarray) -> list[Outcome]:
        analyse = getattr(self.model, "analyse", None)  # with the OOD scorer (issue 12)
        if analyse is not None:
            out = analyse(pixels)
            probabilities, scores, inside = out.probabilities, out.ood_scores, out.in_distribution
        else:
            probabilities, _ = self.model.predict(pixels)
            scores = inside = None
        classes = self.model.classes
        outcomes = []
        for i, row in enumerate(probabilities):
            best = int(np.argmax(row))
            confidence = float(row[best])
            outcomes.append(
                Outcome(
                    predicted=classes[best],
                    confidence=confidence,
                    uncertain=None
                    if self.threshold is None
                    else confidence < float(self.threshold),
                    ood_score=None if scores is None else float(scores[i]),
                    in_distribution=None if inside is None else bool(inside[i]),
                )
            )
        return outcomes

    def score(self, paths: Sequence[Path], progress: bool = True) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(paths)
        bar = tqdm(total=len(paths), desc="external: scoring", unit="img", disable=not progress)
        for start in range(0, len(paths), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(paths)))
            decoded = {i: self._decode(paths[i]) for i in chunk}
            ready = [i for i, d in decoded.items() if isinstance(d, np.ndarray)]
            for i, d in decoded.items():
                if isinstance(d, Outcome):
                    outcomes[i] = d
            if ready:
                pixels = np.stack([decoded[i] for i in ready])
                for i, outcome in zip(ready, self._run(pixels), strict=True):
                    outcomes[i] = outcome
            bar.update(len(chunk))
        bar.close()
        return [o if o is not None else Outcome(error="not_scored") for o in outcomes]


@dataclass
class ApiScorer:
    """Score files by posting them to a running SkinDX API (/predict/batch, /predict)."""

    url: str
    chunk: int = 16  # the API's SKINDX_MAX_BATCH_FILES default; halved on 413 too_many_files
    timeout: float = 120.0
    # on 429 (nginx's rate limit) and 503 (queue full, model loading), after Retry-After
    retries: int = 30
    headers: Mapping[str, str] | None = None
    client: Any = None  # an httpx.Client on the API (default: one on `url`)
    mode: str = field(default="api", init=False)

    def __post_init__(self) -> None:
        import httpx

        self._httpx = httpx
        if self.client is None:
            self.client = httpx.Client(
                base_url=self.url.rstrip("/"),
                timeout=self.timeout,
                headers=dict(self.headers or {}),
            )
        response = self._request("GET", "/model")
        self._card: dict[str, Any] = _json(response)
        if response.status_code != 200:
            raise ExternalError(
                f"{self.url}/model answered {response.status_code}: {response.text[:300]} "
                "(is a model loaded? GET /ready says)"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self._card.get("name"),
            "version": self._card.get("version"),
            "location": self.url,
        }

    def _request(self, method: str, path: str, **kwargs):
        httpx = self._httpx
        for attempt in range(self.retries + 1):
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ExternalError(
                    f"cannot reach the API at {self.url} ({type(exc).__name__}: {exc}); is it "
                    "running? (make serve, or docker compose up)"
                ) from exc
            if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                return response
            try:
                wait = float(response.headers.get("Retry-After", "1"))
            except ValueError:
                wait = 1.0
            log.info("%s answered %s; retrying in %gs", path, response.status_code, wait)
            time.sleep(min(max(wait, 0.1), 30.0))
        raise AssertionError("unreachable")

    @staticmethod
    def _file(path: Path) -> tuple[str, bytes, str]:
        path = Path(path)
        media = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return (path.name, path.read_bytes(), media)

    @staticmethod
    def _outcome(prediction: Mapping[str, Any]) -> Outcome:
        ood = prediction.get("ood_score")
        inside = prediction.get("in_distribution")
        return Outcome(
            predicted=prediction["predicted_class"],
            confidence=float(prediction["confidence"]),
            uncertain=bool(prediction.get("uncertain"))
            if prediction.get("uncertainty_threshold") is not None
            else None,
            ood_score=None if ood is None else float(ood),
            in_distribution=None if inside is None else bool(inside),
        )

    @staticmethod
    def _refusal(body: Any, status: int) -> Outcome:
        body = body if isinstance(body, dict) else {}
        return Outcome(error=str(body.get("code") or f"http_{status}"), detail=body.get("detail"))

    def _one(self, path: Path) -> Outcome:
        response = self._request("POST", "/predict", files={"file": self._file(path)})
        body = _json(response)
        if response.status_code == 200:
            return self._outcome(body)
        if response.status_code in (400, 413, 415, 422):
            return self._refusal(body, response.status_code)
        raise ExternalError(
            f"POST {self.url}/predict answered {response.status_code}: {response.text[:300]}"
        )

    def _batch(self, paths: Sequence[Path]) -> list[Outcome]:
        files = [("files", self._file(p)) for p in paths]
        response = self._request("POST", "/predict/batch", files=files)
        body = _json(response)
        if response.status_code == 200:
            results = body["results"]
            return [
                self._outcome(r["prediction"])
                if r.get("prediction")
                else self._refusal(r.get("error"), int(r.get("status_code", 422)))
                for r in results
            ]
        if response.status_code == 413 and body.get("code") == "too_many_files" and len(paths) > 1:
            self.chunk = max(1, len(paths) // 2)
            half = len(paths) // 2
            return self._batch(paths[:half]) + self._batch(paths[half:])
        if response.status_code in (400, 413, 415, 422):
            # none of the chunk could be classified: ask file by file for each one's reason
            return [self._one(p) for p in paths]
        raise ExternalError(
            f"POST {self.url}/predict/batch answered {response.status_code}: {response.text[:300]}"
        )

    def score(self, paths: Sequence[Path], progress: bool = True) -> list[Outcome]:
        outcomes: list[Outcome] = []
        bar = tqdm(total=len(paths), desc="external: posting", unit="img", disable=not progress)
        while len(outcomes) < len(paths):
            chunk = paths[len(outcomes) : len(outcomes) + self.chunk]
            outcomes.extend(self._batch(chunk))
            bar.update(len(chunk))
        bar.close()
        return outcomes

    def close(self) -> None:
        self.client.close()


def _json(response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- the report ---------------------------------------------------------------------------------
def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def summarise(
    labels: Sequence[str],
    outcomes: Sequence[Outcome],
    lesion_ids: Sequence[Any] | None = None,
    bootstrap: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metrics of the scored images (`labels[i]` the truth of `outcomes[i]`)."""
    classes = list(CLASS_CODES)
    scored = [i for i, o in enumerate(outcomes) if o.predicted is not None]
    y_true = np.array([classes.index(labels[i]) for i in scored], np.int64)
    y_pred = np.array([classes.index(outcomes[i].predicted) for i in scored], np.int64)
    refused = Counter(o.error for o in outcomes if o.predicted is None)
    n = len(scored)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    scores = per_class_scores(cm)
    present = [c for i, c in enumerate(classes) if cm[i].sum() > 0]
    settings = {**BOOTSTRAP_DEFAULTS, **(bootstrap or {})}
    intervals = {}
    groups = None
    if lesion_ids is not None:
        picked = [lesion_ids[i] for i in scored]
        if any(isinstance(g, str) and g for g in picked):
            groups = [g if isinstance(g, str) and g else None for g in picked]
    if n:
        intervals = intervals_from_settings(
            y_true, y_pred, classes, groups=groups, settings=settings
        )

    def ci(name: str) -> dict[str, float | None]:
        interval = intervals.get(name)
        return {
            CI_LOW: _finite(interval.low) if interval else None,
            CI_HIGH: _finite(interval.high) if interval else None,
        }

    report: dict[str, Any] = {"n_images": n, "refused": dict(sorted(refused.items()))}
    report["classes_present"] = present
    report["accuracy"] = _finite(accuracy(y_true, y_pred)) if n else None
    report["balanced_accuracy"] = _finite(balanced_accuracy(y_true, y_pred, len(classes)))
    for suffix, value in ci("balanced_accuracy").items():
        report[f"balanced_accuracy{suffix}"] = value
    mel = classes.index(MELANOMA)
    report["melanoma_sensitivity"] = float(scores["recall"][mel]) if MELANOMA in present else None
    for suffix, value in (ci("melanoma_sensitivity") if MELANOMA in present else {}).items():
        report[f"melanoma_sensitivity{suffix}"] = value
    report["per_class"] = {
        code: {
            "support": int(cm[i].sum()),
            "recall": float(scores["recall"][i]),
            **{f"recall{k}": v for k, v in ci(f"recall.{code}").items()},
            "precision": float(scores["precision"][i]) if cm[:, i].sum() else None,
            "predicted": int(cm[:, i].sum()),
        }
        for i, code in enumerate(classes)
        if code in present
    }
    report["predicted_counts"] = {c: int(cm[:, i].sum()) for i, c in enumerate(classes)}
    report["confusion"] = {
        "classes": classes,
        "matrix": cm.tolist(),
        "rows": "true",
        "cols": "predicted",
    }

    flagged = [o.in_distribution for o in outcomes if o.predicted is not None]
    rejected = refused.get(OOD_REFUSAL, 0)
    has_ood = rejected > 0 or any(f is not None for f in flagged)
    n_ood = sum(1 for f in flagged if f is False) + rejected
    report["n_out_of_distribution"] = n_ood if has_ood else None
    report["ood_rate"] = n_ood / (n + rejected) if has_ood and (n + rejected) else None
    report["ood_note"] = (
        "share of the scored images flagged out of distribution (plus those the API refused as "
        f"{OOD_REFUSAL})"
        if has_ood
        else "null: the model has no out-of-distribution scorer (package it again to add one)"
    )
    uncertain = [outcomes[i].uncertain for i in scored]
    confident = [i for i, u in zip(range(n), uncertain, strict=True) if u is False]
    report["uncertain_rate"] = (
        float(np.mean([bool(u) for u in uncertain]))
        if n and any(u is not None for u in uncertain)
        else None
    )
    report["confident_accuracy"] = (
        float(np.mean(y_true[confident] == y_pred[confident])) if confident else None
    )
    report["bootstrap"] = {
        "method": f"percentile, {'lesions' if groups else 'images'} resampled with replacement",
        **{k: settings[k] for k in ("confidence", "n_resamples", "seed")},
    }
    return report


def evaluate_folder(
    folder: str | Path,
    scorer: PackageScorer | ApiScorer,
    known: KnownImages | None,
    *,
    bootstrap: Mapping[str, Any] | None = None,
    predictions_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Read the folder, leave out what the model has seen, score the rest, report."""
    labelled = read_labelled_folder(Path(folder))
    table, excluded = select_images(labelled, known)
    kept = table[table["status"] == "kept"]
    outcomes = scorer.score([Path(p) for p in kept["source_path"]], progress=progress)
    report: dict[str, Any] = {
        "configured": True,
        "schema_version": SCHEMA_VERSION,
        "mode": scorer.mode,
        "model": scorer.describe(),
        "folder": {
            "path": str(labelled.root),
            "layout": labelled.layout,
            "labels_file": str(labelled.labels_file) if labelled.labels_file else None,
            "n_rows": len(table),
            "unlisted_images": labelled.unlisted_images,
            "other_folders": list(labelled.other_folders),
        },
        "excluded": excluded,
        "n_excluded_training": None
        if excluded["in_training_data"] is None
        else excluded["in_training_data"]["total"],
    }
    report.update(
        summarise(list(kept["label"]), outcomes, list(kept["lesion_id"]), bootstrap=bootstrap)
    )
    if predictions_path is not None:
        write_predictions(
            Path(predictions_path), table, dict(zip(kept.index, outcomes, strict=True))
        )
    return report


def write_predictions(path: Path, table: pd.DataFrame, outcomes: Mapping[int, Outcome]) -> Path:
    """One row per row of the folder: excluded ones with their reason, scored ones with the
    answer (written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PREDICTION_COLUMNS)
        for index, row in table.iterrows():
            o = outcomes.get(index, Outcome())
            status = (
                row["status"] if row["status"] != "kept" else ("refused" if o.error else "scored")
            )
            writer.writerow(
                [
                    row["image_id"],
                    row["lesion_id"] if isinstance(row["lesion_id"], str) else "",
                    row["dx"],
                    row["label"] or "",
                    status,
                    o.predicted or "",
                    "" if o.confidence is None else f"{o.confidence:.6f}",
                    "" if o.uncertain is None else str(o.uncertain).lower(),
                    "" if o.ood_score is None else f"{o.ood_score:.6f}",
                    "" if o.in_distribution is None else str(o.in_distribution).lower(),
                    o.error or "",
                ]
            )
    os.replace(tmp, path)
    return path


def flat_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The report's numbers as MLflow metrics: external_<name>, external_recall_<code>, ..."""
    if not report.get("configured"):
        return {}
    names = (
        "n_images",
        "n_excluded_training",
        "accuracy",
        "balanced_accuracy",
        f"balanced_accuracy{CI_LOW}",
        f"balanced_accuracy{CI_HIGH}",
        "melanoma_sensitivity",
        "ood_rate",
        "uncertain_rate",
        "confident_accuracy",
    )
    flat = {f"{METRIC_PREFIX}{k}": report.get(k) for k in names}
    for code, scores in (report.get("per_class") or {}).items():
        for name in ("recall", f"recall{CI_LOW}", f"recall{CI_HIGH}", "support"):
            flat[f"{METRIC_PREFIX}{name}_{code}"] = scores.get(name)
    return {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and math.isfinite(v)}


def not_configured(reason: str) -> dict[str, Any]:
    return {"configured": False, "reason": reason}


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def format_summary(report: Mapping[str, Any]) -> str:
    """A few lines for people: what was scored, what was left out, the headline numbers."""
    if not report.get("configured"):
        return f"external: {report.get('reason')}"

    def num(value: Any, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    model, ex = report["model"], report["excluded"]
    training = ex["in_training_data"]
    lines = [
        f"external: {report['folder']['path']} ({report['folder']['layout']}) scored by "
        f"{model.get('name')} {model.get('version')} via {report['mode']} {model.get('location')}",
        f"  images scored {report['n_images']}; left out {ex['total']} ("
        + (
            f"{training['total']} in the model's data"
            if training is not None
            else "training ids unknown: no data/processed/splits"
        )
        + f", {ex['unknown_label']['count']} with a label outside the seven classes"
        + f", {ex['missing_image']} without an image, {ex['duplicate_id']} duplicate ids)"
        + (f"; refused by the model: {report['refused']}" if report["refused"] else ""),
        f"  accuracy {num(report['accuracy'])}, balanced accuracy {num(report['balanced_accuracy'])}"
        f" [{num(report.get('balanced_accuracy' + CI_LOW))}, "
        f"{num(report.get('balanced_accuracy' + CI_HIGH))}] over {', '.join(report['classes_present'])}",
        "  recall: "
        + ", ".join(
            f"{code} {num(s['recall'])} (n={s['support']})"
            for code, s in report["per_class"].items()
        ),
        f"  out of distribution: {num(report['ood_rate'])}; uncertain: {num(report['uncertain_rate'])}",
    ]
    return "\n".join(lines)


# --- the DVC stage and the command line -------------------------------------------------------
def run_external(params: Mapping[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """The `external` stage: evaluate.external scored by the candidate package ->
    paths.external_report (+ paths.external_predictions), logged to the pipeline's MLflow run.
    With evaluate.external null it writes a report saying so and returns at once."""
    from skindx import tracking
    from skindx.config import ProjectPaths

    paths = ProjectPaths.from_params(params)
    cfg = params.get("evaluate") or {}
    folder = cfg.get("external")
    if not folder:
        report = not_configured(
            "evaluate.external is not set: nothing to score (set it to a labelled folder, "
            "e.g. `dvc exp run -S evaluate.external=/data/isic-archive external`)"
        )
        write_report(report, paths.external_report)
        write_predictions(paths.external_predictions, pd.DataFrame(columns=["status"]), {})
        return report
    root = tracking.project_root()
    folder = Path(str(folder)).expanduser()
    folder = folder if folder.is_absolute() else root / folder
    scorer = PackageScorer(paths.candidate_dir)
    report = evaluate_folder(
        folder,
        scorer,
        KnownImages.from_project(paths.processed_dir, paths.raw_dir),
        bootstrap=cfg.get("bootstrap"),
        predictions_path=paths.external_predictions,
        progress=progress,
    )
    write_report(report, paths.external_report)
    _log_to_mlflow(params, report, [paths.external_report, paths.external_predictions], paths)
    return report


def _log_to_mlflow(params, report, files, paths) -> None:
    from skindx import tracking

    mlflow = tracking.configure(params.get("mlflow"))
    run_id = tracking.pipeline_run_id(tracking.run_file(paths.train_dir))
    start: dict[str, Any] = {"run_id": run_id} if run_id else {"run_name": "external"}
    if not run_id:
        log.warning("no MLflow run id in %s: logging external to a new run", paths.train_dir)
    with mlflow.start_run(**start):
        mlflow.log_metrics(flat_metrics(report))
        mlflow.set_tag("external.folder", report["folder"]["path"])
        mlflow.set_tag("external.layout", report["folder"]["layout"])
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="external")


def _default_paths() -> dict[str, str]:
    """paths from ./params.yaml when run in the project, else conf's defaults by name."""
    try:
        from skindx.config import load_params

        return dict(load_params().get("paths") or {})
    except (FileNotFoundError, OSError, ValueError):
        return {}


def build_parser() -> argparse.ArgumentParser:
    paths = _default_paths()
    parser = argparse.ArgumentParser(
        prog="python -m skindx.evaluation.external",
        description="Score a labelled folder (a metadata CSV with image_id and dx, an ISIC "
        "one-hot ground-truth CSV, or a folder per class) with a packaged model or a running "
        "SkinDX API, leaving out images the model was developed on.",
    )
    parser.add_argument("folder", type=Path, help="the labelled folder")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--model",
        type=Path,
        default=Path(paths.get("serving_model_dir", "serving/model")),
        help="a packaged model directory (default: the served one, %(default)s)",
    )
    target.add_argument("--api", metavar="URL", help="a running API, e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--processed-dir",
        type=Path,
        default=Path(paths.get("processed_dir", "data/processed")),
        help="the model's splits (splits/*.csv) whose images are left out (default %(default)s)",
    )
    parser.add_argument(
        "--raw-dir",
        type=Path,
        default=Path(paths.get("raw_dir", "data/raw")),
        help="ingest's metadata.csv, for the content hashes (default %(default)s)",
    )
    parser.add_argument(
        "--keep-training-images",
        action="store_true",
        help="do not leave out images of the model's own data (not an external validation)",
    )
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--predictions", type=Path, help="write one CSV row per image here")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    parser.add_argument("--chunk", type=int, default=16, help="files per POST /predict/batch")
    parser.add_argument(
        "--token-env",
        metavar="VAR",
        help="send `Authorization: Bearer $VAR` (an API behind a token)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from skindx.data.errors import DataError

    args = build_parser().parse_args(argv)
    known = None
    if not args.keep_training_images:
        known = KnownImages.from_project(args.processed_dir, args.raw_dir)
        if known is None:
            print(
                f"external: warning: {args.processed_dir}/splits not found, so no image can be "
                "recognised as the model's own data; pass --processed-dir (the project's "
                "data/processed) to leave those out",
                file=sys.stderr,
            )
    try:
        if args.api:
            headers = {}
            if args.token_env:
                headers["Authorization"] = f"Bearer {os.environ.get(args.token_env, '')}"
            scorer: PackageScorer | ApiScorer = ApiScorer(
                args.api, chunk=args.chunk, headers=headers
            )
        else:
            scorer = PackageScorer(args.model, batch_size=args.batch_size)
        report = evaluate_folder(
            args.folder,
            scorer,
            known,
            predictions_path=args.predictions,
            progress=not args.quiet,
        )
    except (ExternalError, DataError) as exc:
        print(f"external: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        write_report(report, args.out)
    print(json.dumps(report, indent=2) if args.json else format_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
