"""Ingest's optional second source: the cases a reviewer labelled through POST /feedback whose
image the API stored (SKINDX_STORE_UPLOADS), read from the prediction log (`data.feedback`).

The rows come from serving.predlog's own query (`reviewed_cases`: feedback joined with its
prediction), so the tables are defined once. Each usable case becomes one row of
`data/raw/metadata.csv`:

  image_id / lesion_id   `FB_<first 16 hex of the image sha256>` (its own lesion: nothing says
                         which lesion a photo shows), dx = the reviewer's label,
                         dx_type `review`, origin `feedback`;
  provenance             request_id, reviewer, reviewed_at, predicted_class, model_version
                         (the model that was corrected or confirmed), and sha256.

What does not become a row is counted in the manifest's `feedback` section, by reason:
  no_stored_image  the upload was not stored, or the retention deleted it;
  checksum         the stored file's sha256 is not the logged one (changed on disk);
  unusable         it does not decode, is not RGB, or is smaller than validation's minimum;
  in_dataset       byte-identical to an image of the main source: that image keeps its own
                   label and split (adding it to train could put a test image there);
  duplicate        the same image reviewed again with the same label (the first review stays);
  conflicting      the same image reviewed with different labels: every copy is left out.

preprocess puts every `origin == feedback` row in the training split, never in validation or
test, so the fixed test split stays the yardstick for promotion.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from skindx.data.errors import SourceError
from skindx.data.images import inspect_image
from skindx.data.ingest import (
    IMAGES_DIR,
    MANIFEST_FILE,
    METADATA_FILE,
    compute_data_hash,
    read_manifest,
    read_metadata,
)
from skindx.data.splits import ORIGIN_COLUMN, TRAIN_ONLY_ORIGINS
from skindx.data.validation import MIN_SIDE

FEEDBACK_ORIGIN = TRAIN_ONLY_ORIGINS[0]
DATASET_ORIGIN = "ham10000"  # the main source's rows, once feedback rows sit beside them
FEEDBACK_DX_TYPE = "review"
ID_PREFIX = "FB_"
ID_HEX = 16
PROVENANCE_COLUMNS = ("request_id", "reviewer", "reviewed_at", "predicted_class", "model_version")
SKIP_REASONS = (
    "no_stored_image",
    "checksum",
    "unusable",
    "in_dataset",
    "duplicate",
    "conflicting",
)
EXTENSIONS = {"jpg", "jpeg", "png", "webp"}


@dataclass(frozen=True)
class FeedbackSource:
    """`data.feedback` resolved: the log's URL, the stored uploads, the review-time window."""

    db: str
    uploads_dir: Path
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, root: Path) -> FeedbackSource | None:
        """None when `data.feedback.db` is null (the default: no feedback source). Relative
        paths (a SQLite file, the uploads dir) are relative to `root`, the project root."""
        params = dict(params or {})
        if not params.get("db"):
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(str(params["db"]))
        except ArgumentError as exc:
            raise SourceError(
                f"data.feedback.db {params['db']!r} is not a database URL: use the API's "
                "SKINDX_PREDICTION_DB, e.g. sqlite:///.run/predictions.db"
            ) from exc
        sqlite_file = None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            sqlite_file = Path(url.database).expanduser()
            if not sqlite_file.is_absolute():
                sqlite_file = root / sqlite_file
            url = url.set(database=str(sqlite_file))
        uploads = params.get("uploads_dir")
        if uploads:
            uploads_dir = Path(str(uploads)).expanduser()
            uploads_dir = uploads_dir if uploads_dir.is_absolute() else root / uploads_dir
        elif sqlite_file is not None:  # the API's default: <run_dir>/uploads next to the DB
            uploads_dir = sqlite_file.parent / "uploads"
        else:
            raise SourceError(
                "data.feedback.uploads_dir is null: set it to the API's stored uploads "
                "(SKINDX_UPLOADS_DIR, by default <SKINDX_RUN_DIR>/uploads)"
            )
        since, until = _moment(params.get("since"), "since"), _moment(params.get("until"), "until")
        if since and until and since >= until:
            raise SourceError(f"data.feedback: since {since} is not before until {until}")
        return cls(url.render_as_string(hide_password=False), uploads_dir, since, until)

    def describe(self) -> str:
        from sqlalchemy.engine import make_url

        window = f"reviewed in [{self.since or '-inf'}, {self.until or 'now'})"
        db = make_url(self.db).render_as_string(hide_password=True)
        return f"{db}, images in {self.uploads_dir}, {window}"


def _moment(value: Any, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise SourceError(
                f"data.feedback.{name} {value!r} is not an ISO 8601 time (e.g. 2026-12-01 or "
                "2026-12-01T12:00:00Z)"
            ) from exc
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes: the log writes UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    return _utc(moment).isoformat(timespec="seconds") if moment is not None else None


@dataclass
class FeedbackCases:
    """The reviewed cases of one window that have a usable stored image (`rows`: metadata
    columns, provenance, `source_path`, `sha256`), and how many were left out and why."""

    source: FeedbackSource
    rows: list[dict[str, Any]]
    n_reviewed: int
    until: datetime  # the window's end: data.feedback.until, else when the log was read
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, request_id: str) -> None:
        self.skipped[reason] += 1
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(request_id)


def read_reviewed_cases(source: FeedbackSource) -> FeedbackCases:
    """The window's reviewed cases from the prediction log, each with its verified image."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from serving.predlog.models import feedback, predictions
    from serving.predlog.store import reviewed_cases
    from serving.predlog.writer import make_engine, sqlite_path

    engine = make_engine(source.db)
    path = sqlite_path(engine)
    if path is not None and not path.is_file():
        raise SourceError(
            f"data.feedback.db: no prediction log at {path}; point it at the API's "
            "SKINDX_PREDICTION_DB (by default <SKINDX_RUN_DIR>/predictions.db)"
        )
    try:
        missing = {predictions.name, feedback.name} - set(inspect(engine).get_table_names())
        if missing:
            raise SourceError(
                f"data.feedback.db {engine.url!r} has no {', '.join(sorted(missing))} table: "
                "it is not a prediction log (the API creates one at startup)"
            )
        until = source.until or datetime.now(UTC)
        found = reviewed_cases(engine, source.since, until)
    except SQLAlchemyError as exc:
        raise SourceError(
            f"cannot read the prediction log at {engine.url!r}: {type(exc).__name__}: {exc}. "
            "Check data.feedback.db and that the database is up"
        ) from exc
    finally:
        engine.dispose()

    cases = FeedbackCases(source, [], len(found), until)
    for case in found:
        request_id = str(case["request_id"])
        stored = case.get("image_path")
        file = (source.uploads_dir / stored) if stored else None
        if file is None or not file.is_file():
            cases.skip("no_stored_image", request_id)
            continue
        check = inspect_image(file)
        if check.sha256 != case["image_sha256"]:
            cases.skip("checksum", request_id)
            continue
        if not check.decodes or check.mode != "RGB" or (check.min_side or 0) < MIN_SIDE:
            cases.skip("unusable", request_id)
            continue
        image_id = f"{ID_PREFIX}{check.sha256[:ID_HEX]}"
        cases.rows.append(
            {
                "image_id": image_id,
                "lesion_id": image_id,
                "dx": case["label"],
                "dx_type": FEEDBACK_DX_TYPE,
                "age": None,
                "sex": "unknown",
                "localization": "unknown",
                ORIGIN_COLUMN: FEEDBACK_ORIGIN,
                "request_id": request_id,
                "reviewer": case.get("reviewer"),
                "reviewed_at": _iso(case["reviewed_at"]),
                "predicted_class": case.get("predicted_class"),
                "model_version": case.get("model_version"),
                "sha256": check.sha256,
                "source_path": file,
            }
        )
    return cases


def _deduplicate(cases: FeedbackCases, dataset_sha256: set[str]) -> list[dict[str, Any]]:
    """The rows to add: none byte-identical to a dataset image; one per image among the cases
    (the first review when all agree, none when the labels disagree)."""
    by_image: dict[str, list[dict[str, Any]]] = {}
    for row in cases.rows:
        by_image.setdefault(row["sha256"], []).append(row)
    kept = []
    for digest, rows in by_image.items():
        if digest in dataset_sha256:
            for row in rows:
                cases.skip("in_dataset", row["request_id"])
        elif len({row["dx"] for row in rows}) > 1:
            for row in rows:
                cases.skip("conflicting", row["request_id"])
        else:
            kept.append(rows[0])
            for row in rows[1:]:
                cases.skip("duplicate", row["request_id"])
    return sorted(kept, key=lambda row: (row["reviewed_at"], row["request_id"]))


def add_feedback_cases(raw_dir: Path, cases: FeedbackCases) -> dict[str, Any]:
    """Append the usable cases to an ingested `raw_dir` (metadata.csv, images/, the manifest's
    counts, data_hash and `feedback` section); returns the new manifest."""
    raw_dir = Path(raw_dir)
    meta = read_metadata(raw_dir)
    manifest = read_manifest(raw_dir)
    if ORIGIN_COLUMN not in meta.columns:
        meta[ORIGIN_COLUMN] = DATASET_ORIGIN
    rows = _deduplicate(cases, set(meta["sha256"].dropna().astype(str)))
    added = []
    for row in rows:
        suffix = row["source_path"].suffix.lower().lstrip(".")
        suffix = "jpg" if suffix in ("jpeg", "") or suffix not in EXTENSIONS else suffix
        relative = f"{IMAGES_DIR}/{row['image_id']}.{suffix}"
        shutil.copyfile(row["source_path"], raw_dir / relative)
        added.append({k: v for k, v in row.items() if k != "source_path"} | {"path": relative})
    for column in PROVENANCE_COLUMNS:
        if column not in meta.columns:
            meta[column] = pd.Series(pd.NA, index=meta.index, dtype=object)
    table = pd.concat([meta, pd.DataFrame(added, columns=list(meta.columns))], ignore_index=True)
    table.to_csv(raw_dir / METADATA_FILE, index=False)

    reviewed = [row["reviewed_at"] for row in rows]
    summary = {
        "source": cases.source.describe(),
        "since": _iso(cases.source.since),
        "until": _iso(cases.until),
        "until_configured": cases.source.until is not None,  # else: when ingest read the log
        "first_reviewed_at": min(reviewed, default=None),
        "last_reviewed_at": max(reviewed, default=None),
        "n_reviewed": cases.n_reviewed,
        "n_cases": len(rows),
        "skipped": {reason: int(cases.skipped.get(reason, 0)) for reason in SKIP_REASONS},
        "skipped_examples": cases.skipped_examples,
        "counts": dict(sorted(Counter(row["dx"] for row in rows).items())),
    }
    dx = table["dx"].fillna("<missing>").astype(str)
    manifest.update(
        n_rows=len(table),
        n_images=int(table["sha256"].notna().sum()),
        counts={str(k): int(v) for k, v in sorted(dx.value_counts().items())},
        data_hash=compute_data_hash(table),
        feedback=summary,
    )
    (raw_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def feedback_lineage(manifest: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What a model card and its MLflow run say about the feedback a model was trained on:
    None when ingest had no feedback source, else the count and the window."""
    summary = (manifest or {}).get("feedback")
    if not isinstance(summary, Mapping):
        return None
    keys = ("n_cases", "since", "until", "first_reviewed_at", "last_reviewed_at", "n_reviewed")
    return {key: summary.get(key) for key in keys}
