"""Ingest's feedback source: reviewed cases read from a real prediction log (SQLite, written by
the API's own writer and POST /feedback's store), with provenance, explicit duplicates and
skips; preprocess puts them in train only; the GX suite accepts them."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.predlog.store import add_feedback
from serving.predlog.writer import LogCounters, PendingRecord, PredictionLog
from skindx.data.errors import SourceError
from skindx.data.feedback import FeedbackSource, add_feedback_cases, read_reviewed_cases
from skindx.data.ingest import read_metadata
from skindx.data.preprocess import make_splits
from skindx.data.validation import validate
from skindx.inference.classes import CLASS_CODES
from skindx.inference.image_stats import STAT_KEYS
from tests.data.conftest import CLASSES

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class _Count:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class FeedbackLog:
    """A prediction log with stored uploads, filled the way the API fills it: PredictionLog's
    writer thread for the predictions (and their images), add_feedback for the labels."""

    def __init__(self, folder: Path) -> None:
        self.url = f"sqlite:///{folder / 'predictions.db'}"
        self.uploads = folder / "uploads"
        counters = LogCounters(_Count(), _Count(), _Count(), _Count())
        # `now` at T0: the retention never prunes these fixed-date uploads
        self.log = PredictionLog(self.url, counters, uploads_dir=self.uploads, now=lambda: T0)
        self.log.start()
        self.n = 0

    def predict(self, image: Path, at: datetime = T0, store: bool = True) -> str:
        data = image.read_bytes()
        self.n += 1
        request_id = f"req-{self.n:03d}"
        row = {
            "request_id": request_id,
            "http_request_id": request_id,
            "endpoint": "predict",
            "batch_index": None,
            "created_at": at,
            "model_version": "7",
            "card_sha256": None,
            "predicted_class": "nv",
            "confidence": 0.9,
            "probabilities": {c: 1 / len(CLASS_CODES) for c in CLASS_CODES},
            "ood_score": None,
            "image_format": "JPEG",
            "image_width": 1,
            "image_height": 1,
            "image_bytes": len(data),
            "image_sha256": hashlib.sha256(data).hexdigest(),
            **dict.fromkeys(STAT_KEYS, 0.0),
            "latency_ms": 1.0,
        }
        assert self.log.submit(PendingRecord(row, data if store else None, "jpg"))
        assert self.log.flush()
        return request_id

    def label(self, request_id: str, label: str, at: datetime, reviewer: str = "dr. a") -> None:
        add_feedback(self.log.engine, request_id, label, reviewer=reviewer, now=at)

    def source(self, **window) -> FeedbackSource:
        params = {"db": self.url, "uploads_dir": str(self.uploads), **window}
        return FeedbackSource.from_params(params, Path("/nonexistent"))


@pytest.fixture
def new_images(ham_dir: Path, raw_sample: Path) -> list[Path]:
    """Real images that are not in raw_sample (byte for byte)."""
    known = set(read_metadata(raw_sample)["sha256"])
    picks = []
    for path in sorted((ham_dir / "images").glob("ISIC_*.jpg")):
        if hashlib.sha256(path.read_bytes()).hexdigest() not in known:
            picks.append(path)
        if len(picks) == 6:
            return picks
    raise AssertionError("not enough images outside raw_sample")


@pytest.fixture
def feedback_log(tmp_path: Path):
    log = FeedbackLog(tmp_path / "run")
    yield log
    log.log.close()


@pytest.mark.slow
def test_reviewed_cases_join_raw_data_with_provenance_and_explicit_skips(
    feedback_log: FeedbackLog, new_images: list[Path], raw_copy: Path, fullres_images: list[Path]
):
    log, day = feedback_log, timedelta(days=1)
    kept = log.predict(new_images[0])
    log.label(kept, "mel", T0 + day, reviewer="dr. a")
    not_stored = log.predict(new_images[1], store=False)
    log.label(not_stored, "bcc", T0 + day)
    in_dataset = log.predict(fullres_images[0])  # byte-identical to an image of the dataset
    log.label(in_dataset, "vasc", T0 + day)
    first, again = log.predict(new_images[2]), log.predict(new_images[2])
    log.label(first, "df", T0 + day)
    log.label(again, "df", T0 + 2 * day)  # same image, same label: the first review stays
    left, right = log.predict(new_images[3]), log.predict(new_images[3])
    log.label(left, "nv", T0 + day)
    log.label(right, "mel", T0 + day)  # same image, labels disagree: neither is used
    tampered = log.predict(new_images[4])
    log.label(tampered, "akiec", T0 + day)
    stored = next(log.uploads.rglob(f"{hashlib.sha256(new_images[4].read_bytes()).hexdigest()}*"))
    stored.write_bytes(new_images[5].read_bytes())  # changed on disk after logging
    outside = log.predict(new_images[5])
    log.label(outside, "bkl", T0 + 10 * day)  # reviewed after the window
    unlabelled = log.predict(new_images[5])  # never reviewed
    assert unlabelled

    before = read_metadata(raw_copy)
    cases = read_reviewed_cases(log.source(since="2026-11-01", until="2026-11-05"))
    manifest = add_feedback_cases(raw_copy, cases)

    summary = manifest["feedback"]
    assert summary["n_reviewed"] == 8  # labelled inside the window
    assert summary["n_cases"] == 2
    assert summary["skipped"] == {
        "no_stored_image": 1,
        "checksum": 1,
        "unusable": 0,
        "in_dataset": 1,
        "duplicate": 1,
        "conflicting": 2,
    }
    assert summary["skipped_examples"]["in_dataset"] == [in_dataset]
    assert summary["since"] == "2026-11-01T00:00:00+00:00"
    assert summary["until"] == "2026-11-05T00:00:00+00:00" and summary["until_configured"]
    assert summary["counts"] == {"df": 1, "mel": 1}

    meta = read_metadata(raw_copy)
    added = meta[meta["origin"] == "feedback"].set_index("request_id")
    assert sorted(added.index) == sorted([kept, first])
    assert (meta["origin"] == "ham10000").sum() == len(before)
    row = added.loc[kept]
    digest = hashlib.sha256(new_images[0].read_bytes()).hexdigest()
    assert row["image_id"] == row["lesion_id"] == f"FB_{digest[:16]}"
    assert (row["dx"], row["dx_type"], row["reviewer"]) == ("mel", "review", "dr. a")
    assert (row["predicted_class"], row["model_version"]) == ("nv", "7")
    assert row["reviewed_at"] == (T0 + day).isoformat()
    assert row["sha256"] == digest
    assert (raw_copy / row["path"]).read_bytes() == new_images[0].read_bytes()
    assert manifest["n_rows"] == len(meta) == len(before) + 2
    assert manifest["counts"]["mel"] == int((meta["dx"] == "mel").sum())
    assert json.loads((raw_copy / "manifest.json").read_text()) == manifest

    # the GX suite accepts the reviewed cases next to the dataset
    report = validate(raw_copy, CLASSES, progress=False)
    assert report.success, report.failure_message()
    assert not [w for w in report.warnings if w.column in ("dx_type", "image_sha256")]


def test_reviewed_cases_only_ever_train(raw_sample: Path, tmp_path: Path):
    """The same dataset with and without reviewed cases: identical val and test, and every
    reviewed case in train, whatever the caps."""
    raw = Path(shutil.copytree(raw_sample, tmp_path / "raw"))
    meta = read_metadata(raw)
    rng = np.random.default_rng(0)
    extra = pd.DataFrame(
        {
            "image_id": [f"FB_{i:016x}" for i in range(30)],
            "dx": rng.choice(CLASSES, 30),
            "origin": "feedback",
        }
    ).assign(lesion_id=lambda df: df["image_id"])
    with_cases = pd.concat([meta.assign(origin="ham10000"), extra], ignore_index=True)
    params = {"classes": CLASSES, "split": {"train": 0.7, "val": 0.15, "test": 0.15, "seed": 3}}
    params |= {"max_per_class": 6, "train_max_per_class": 3}
    plain, mixed = make_splits(meta, params), make_splits(with_cases, params)
    for split in ("val", "test"):
        ids = mixed.loc[mixed["split"] == split, "image_id"]
        assert list(ids) == list(plain.loc[plain["split"] == split, "image_id"])
        assert not ids.str.startswith("FB_").any()
    train = mixed[mixed["split"] == "train"]
    assert set(extra["image_id"]) <= set(train["image_id"])  # no cap drops a reviewed case
    assert len(train) == (plain["split"] == "train").sum() + 30


def test_feedback_source_settings(tmp_path: Path):
    assert FeedbackSource.from_params(None, tmp_path) is None
    assert FeedbackSource.from_params({"db": None, "since": "2026-01-01"}, tmp_path) is None
    source = FeedbackSource.from_params({"db": "sqlite:///.run/predictions.db"}, tmp_path)
    assert source.uploads_dir == tmp_path / ".run" / "uploads"  # the API's default layout
    assert source.since is None and source.until is None
    with pytest.raises(SourceError, match="uploads_dir"):
        FeedbackSource.from_params({"db": "postgresql://u:p@db/log"}, tmp_path)
    with pytest.raises(SourceError, match="ISO 8601"):
        FeedbackSource.from_params({"db": "sqlite:///x.db", "since": "last week"}, tmp_path)
    with pytest.raises(SourceError, match="not before"):
        FeedbackSource.from_params(
            {"db": "sqlite:///x.db", "since": "2026-02-01", "until": "2026-01-01"}, tmp_path
        )
    missing = FeedbackSource.from_params({"db": f"sqlite:///{tmp_path / 'none.db'}"}, tmp_path)
    with pytest.raises(SourceError, match="no prediction log"):
        read_reviewed_cases(missing)
