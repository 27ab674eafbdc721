"""Ingest: copy a source into `data/raw/` in one normalised form, whatever its layout.

Writes `metadata.csv` (the HAM10000 columns + `path` relative to raw_dir + `sha256`),
`images/ISIC_XXXXXXX.jpg` and `manifest.json` (counts and the dataset's content hash).
Problems inside the data (a missing image, an odd label) are carried through for the
validate stage to report; only an unusable source stops ingest.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from skindx.data.errors import DataError
from skindx.data.images import sha256_bytes
from skindx.data.sources import METADATA_COLUMNS, SourceTable

RAW_COLUMNS = (*METADATA_COLUMNS, "path", "sha256")
METADATA_FILE = "metadata.csv"
MANIFEST_FILE = "manifest.json"
IMAGES_DIR = "images"
# Read back as text so ids and codes are never reinterpreted as numbers.
TEXT_COLUMNS = (
    "image_id",
    "lesion_id",
    "dx",
    "dx_type",
    "sex",
    "localization",
    "path",
    "sha256",
    # reviewed cases' provenance (skindx.data.feedback), present once ingest adds them
    "origin",
    "request_id",
    "reviewer",
    "reviewed_at",
    "predicted_class",
    "model_version",
)


def compute_data_hash(metadata: pd.DataFrame) -> str:
    """sha256 over the sorted `image_id:sha256:dx:lesion_id` lines, one per row, each ending
    in a newline: the same images, labels and lesion groups give the same hash."""
    fields = [
        metadata[c].fillna("").astype(str)
        if c in metadata.columns
        else pd.Series("", index=metadata.index)
        for c in ("image_id", "sha256", "dx", "lesion_id")
    ]
    lines = sorted(":".join(values) for values in zip(*fields, strict=True))
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _target_name(image_id: str, source: Path | None) -> str:
    suffix = (
        ".jpg" if not isinstance(source, Path) else source.suffix.lower().replace(".jpeg", ".jpg")
    )
    return f"{IMAGES_DIR}/{image_id}{suffix}"


def _copy(source: Path, target: Path) -> str | None:
    """Copy one image, returning its sha256 (None if the source cannot be read)."""
    try:
        data = source.read_bytes()
    except OSError:
        return None
    target.write_bytes(data)
    return sha256_bytes(data)


def _clear(raw_dir: Path) -> None:
    # Remove only what ingest writes: raw_dir may be configured to a shared folder.
    images = raw_dir / IMAGES_DIR
    if images.is_dir():
        for entry in images.iterdir():
            if entry.is_file():
                entry.unlink()
    for name in (METADATA_FILE, MANIFEST_FILE):
        (raw_dir / name).unlink(missing_ok=True)


def ingest(
    table: SourceTable,
    raw_dir: Path,
    *,
    source_label: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `raw_dir/{metadata.csv, images/, manifest.json}` from `table`; returns the manifest."""
    raw_dir = Path(raw_dir)
    _clear(raw_dir)
    (raw_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)

    meta = table.metadata.copy()
    ids = meta["image_id"].fillna("").astype(str)
    meta["path"] = [_target_name(i, s) for i, s in zip(ids, meta["source_path"], strict=True)]
    jobs = [
        (row, src, raw_dir / rel)
        for row, (src, rel) in enumerate(zip(meta["source_path"], meta["path"], strict=True))
        if isinstance(src, Path)
    ]
    hashes: list[str | None] = [None] * len(meta)
    workers = workers or min(8, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda job: _copy(job[1], job[2]), jobs)
        for (row, _, _), digest in tqdm(
            zip(jobs, results, strict=True),
            total=len(jobs),
            desc="ingest: copying images",
            unit="img",
            disable=not progress,
            mininterval=1.0,
        ):
            hashes[row] = digest
    meta["sha256"] = hashes

    columns = [c for c in RAW_COLUMNS if c in meta.columns]
    meta[columns].to_csv(raw_dir / METADATA_FILE, index=False)

    dx = meta["dx"] if "dx" in meta.columns else pd.Series(dtype=str)
    n_images = int(meta["sha256"].notna().sum())
    manifest = {
        "source": source_label or str(table.root),
        "layout": table.layout,
        "metadata_file": str(table.metadata_file),
        "n_rows": len(meta),
        "n_images": n_images,
        "missing_images": table.n_missing_images,
        "unlisted_images": table.unlisted_images,
        "unavailable_columns": list(table.unavailable_columns),
        "counts": {
            str(k): int(v) for k, v in sorted(dx.fillna("<missing>").value_counts().items())
        },
        "data_hash": compute_data_hash(meta),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (raw_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(raw_dir: Path) -> dict[str, Any]:
    path = Path(raw_dir) / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_metadata(raw_dir: Path) -> pd.DataFrame:
    path = Path(raw_dir) / METADATA_FILE
    if not path.exists():
        raise DataError(f"{path} not found: run the ingest stage first (dvc repro ingest)")
    try:
        header = pd.read_csv(path, nrows=0).columns
        dtypes = {c: str for c in TEXT_COLUMNS if c in header}
        return pd.read_csv(path, dtype=dtypes)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
