"""Where HAM10000 comes from: source resolution and the folder layouts users actually have.

Resolution order (first that applies wins):
  1. `data.source` (a folder, or an http(s) URL of a zip archive),
  2. the `SKINDX_DATA_DIR` environment variable,
  3. `data.default_source` (`../shared/data/ham10000`) when that folder exists,
  4. the ISIC 2018 Task 3 download configured in `data.download`.

Layouts (detected, never configured):
  - `kaggle`: `HAM10000_metadata.csv` (or the Dataverse `.tab`) plus images spread over
    subfolders such as `HAM10000_images_part_1/` and `HAM10000_images_part_2/`;
  - `flat`: a metadata CSV plus all images in one folder (`../shared/data/ham10000`);
  - `isic2018`: `ISIC2018_Task3_Training_GroundTruth.csv` (one-hot labels) plus
    `ISIC2018_Task3_Training_LesionGroupings.csv` plus an images folder. This layout has no
    age/sex/localization; they are reported as unavailable rather than invented.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from skindx.data.errors import SourceError
from skindx.data.images import IMAGE_SUFFIXES
from skindx.inference.classes import CLASS_CODES, CLASS_INFO

ENV_VAR = "SKINDX_DATA_DIR"
METADATA_COLUMNS = ("image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization")
HAM_METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
ISIC_GROUND_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC_LESION_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
ISIC_UNAVAILABLE = ("age", "sex", "localization")
# ISIC 2018 spells out how a diagnosis was confirmed; HAM10000 uses these short codes.
ISIC_CONFIRM_TYPES = {
    "histopathology": "histo",
    "serial imaging showing no change": "follow_up",
    "single image expert consensus": "consensus",
    "confocal microscopy with consistent histopathology": "confocal",
}
COLUMN_ALIASES = {"image": "image_id", "lesion": "lesion_id", "diagnosis": "dx"}
_IMAGE_NAME = re.compile(r"^ISIC_\d+$")
_SKIP_DIRS = {"__MACOSX", ".git", ".dvc"}
EXPECTED_LAYOUTS = (
    "expected one of: HAM10000_metadata.csv plus images (in one folder or in "
    "HAM10000_images_part_1/2), a flat folder with a metadata CSV (image_id, lesion_id, dx, ...) "
    f"plus images/, or the ISIC 2018 Task 3 files {ISIC_GROUND_TRUTH} + "
    f"{ISIC_LESION_GROUPINGS} + ISIC2018_Task3_Training_Input/"
)


@dataclass(frozen=True)
class ResolvedSource:
    """Where the data will come from and why (`origin` names the rule that chose it)."""

    origin: str  # data.source | $SKINDX_DATA_DIR | data.default_source | download
    path: Path | None = None  # a local folder; None when it must be downloaded
    url: str | None = None  # data.source given as a URL

    def describe(self) -> str:
        if self.path is not None:
            return f"{self.path} (from {self.origin})"
        if self.url:
            return f"{self.url} (from {self.origin})"
        return "the ISIC 2018 Task 3 download (data.download)"


@dataclass
class SourceTable:
    """A source folder read into one table: the metadata columns the layout provides plus
    `source_path`, the image file for each row (None when the image is missing)."""

    root: Path
    layout: str  # kaggle | flat | isic2018
    metadata: pd.DataFrame
    metadata_file: Path
    unavailable_columns: tuple[str, ...] = ()
    unlisted_images: int = 0  # image files that no metadata row mentions

    @property
    def n_missing_images(self) -> int:
        return int(self.metadata["source_path"].isna().sum())


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def resolve_source(
    data_params: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> ResolvedSource:
    """Pick the source by the documented order; paths are relative to the project root
    ($DVC_ROOT, which for a queued experiment is the checkout, not its copy in .dvc/tmp/exps)."""
    environ = os.environ if environ is None else environ
    root = Path(environ.get("DVC_ROOT") or Path.cwd()) if root is None else Path(root)

    def local(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else root / path

    source = data_params.get("source")
    if source:
        source = str(source)
        if _is_url(source):
            return ResolvedSource("data.source", url=source)
        return ResolvedSource("data.source", path=local(source))
    if environ.get(ENV_VAR):
        return ResolvedSource(f"${ENV_VAR}", path=local(environ[ENV_VAR]))
    default = data_params.get("default_source")
    if default and local(str(default)).is_dir():
        return ResolvedSource("data.default_source", path=local(str(default)))
    return ResolvedSource("download")


def _walk(root: Path, max_depth: int | None = None):
    """os.walk in sorted order, skipping hidden/metadata folders, down to `max_depth`."""
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        here = Path(dirpath)
        if max_depth is not None and len(here.parts) - base_depth >= max_depth:
            dirnames[:] = []
        yield here, sorted(filenames)


def _find_file(root: Path, names: tuple[str, ...], max_depth: int = 2) -> Path | None:
    wanted = {n.lower(): i for i, n in enumerate(names)}
    found: list[tuple[int, int, Path]] = []
    for depth_dir, filenames in _walk(root, max_depth):
        for name in filenames:
            if name.lower() in wanted:
                depth = len(depth_dir.parts) - len(root.parts)
                found.append((depth, wanted[name.lower()], depth_dir / name))
    return min(found)[2] if found else None


def index_images(
    root: Path, *, any_name: bool = False, suffixes: tuple[str, ...] = IMAGE_SUFFIXES
) -> dict[str, Path]:
    """image_id -> file for every `ISIC_<digits>.<jpg|jpeg|png>` under root (any depth), or
    with `any_name` every image file, keyed by its name without the suffix.

    The Kaggle upload ships each image twice (`HAM10000_images_part_1` and
    `ham10000_images_part_1`); the first in sorted order wins.
    """
    index: dict[str, Path] = {}
    for folder, filenames in _walk(root):
        for name in filenames:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in suffixes and (any_name or _IMAGE_NAME.match(stem)):
                index.setdefault(stem, folder / name)
    return index


def _read_table(path: Path) -> pd.DataFrame:
    """A metadata table, comma- or tab-separated, every value as text (NaN when empty)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = fh.readline()
        sep = "\t" if header.count("\t") > header.count(",") else ","
        table = pd.read_csv(path, sep=sep, dtype=str, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SourceError(f"cannot read the metadata table {path}: {exc}") from exc
    table.columns = [
        COLUMN_ALIASES.get(c.strip().lower(), c.strip().lower()) for c in table.columns
    ]
    for column in table.columns:
        table[column] = table[column].str.strip()
    return table


def _find_metadata_csv(root: Path) -> Path | None:
    """HAM10000_metadata.*, else the one CSV near the top that has image_id and dx columns."""
    named = _find_file(root, HAM_METADATA_NAMES)
    if named is not None:
        return named
    return _find_table_by_header(
        root,
        lambda columns: {"image_id", "dx"} <= set(columns),
        skip=(ISIC_GROUND_TRUTH, ISIC_LESION_GROUPINGS),
    )


def _find_table_by_header(
    root: Path, accepts: Callable[[list[str]], bool], skip: tuple[str, ...] = ()
) -> Path | None:
    """The first CSV/TSV near the top of `root` whose header (lower-cased, column aliases
    applied) `accepts`: how a labelled table is recognised when it has no well-known name."""
    for folder, filenames in _walk(root, max_depth=1):
        for name in filenames:
            if not name.lower().endswith((".csv", ".tab", ".tsv")) or name in skip:
                continue
            try:
                with (folder / name).open(encoding="utf-8-sig") as fh:
                    header = fh.readline().lower()
            except (OSError, UnicodeDecodeError):
                continue
            columns = [COLUMN_ALIASES.get(c.strip(), c.strip()) for c in re.split("[,\t]", header)]
            if accepts(columns):
                return folder / name
    return None


def _read_ham_layout(root: Path, metadata_file: Path) -> tuple[pd.DataFrame, tuple[str, ...]]:
    table = _read_table(metadata_file)
    if "image_id" not in table.columns:
        raise SourceError(
            f"{metadata_file} has no image_id column (found: {', '.join(table.columns)}); "
            "expected the HAM10000 metadata columns " + ", ".join(METADATA_COLUMNS)
        )
    present = [c for c in METADATA_COLUMNS if c in table.columns]
    return table[present].copy(), ()


def onehot_labels(truth: pd.DataFrame, class_columns: list[str]) -> pd.Series:
    """The class column that holds the 1 of each row of a one-hot ground-truth table.
    A row that is not exactly one-hot keeps a readable label (`not-one-hot(mel+nv)`) for
    validation (or external scoring) to report."""
    onehot = truth[class_columns].apply(pd.to_numeric, errors="coerce").fillna(0.0) >= 0.5
    hot_count = onehot.sum(axis=1)
    dx = onehot.idxmax(axis=1).where(hot_count == 1)
    bad = hot_count != 1
    dx[bad] = [
        "not-one-hot(" + "+".join(c for c in class_columns if row[c]) + ")"
        for _, row in onehot[bad].iterrows()
    ]
    return dx


def _read_isic_layout(root: Path, ground_truth: Path) -> tuple[pd.DataFrame, tuple[str, ...]]:
    truth = _read_table(ground_truth)
    groupings_file = _find_file(root, (ISIC_LESION_GROUPINGS,))
    if groupings_file is None:
        raise SourceError(
            f"found {ground_truth} but not {ISIC_LESION_GROUPINGS} under {root}: the lesion "
            "groupings are needed to split by lesion (download them with the ground truth)"
        )
    class_columns = [c for c in truth.columns if c in CLASS_CODES]
    if "image_id" not in truth.columns or not class_columns:
        raise SourceError(
            f"{ground_truth} should have an `image` column and one-hot columns "
            f"{', '.join(c.upper() for c in CLASS_CODES)}; found {', '.join(truth.columns)}"
        )
    table = pd.DataFrame({"image_id": truth["image_id"], "dx": onehot_labels(truth, class_columns)})

    groupings = _read_table(groupings_file)
    if not {"image_id", "lesion_id"} <= set(groupings.columns):
        raise SourceError(
            f"{groupings_file} should have columns image, lesion_id, diagnosis_confirm_type; "
            f"found {', '.join(groupings.columns)}"
        )
    if "diagnosis_confirm_type" in groupings.columns:
        confirm = groupings["diagnosis_confirm_type"].str.lower()
        groupings["dx_type"] = confirm.map(ISIC_CONFIRM_TYPES).fillna(confirm)
    keep = [c for c in ("image_id", "lesion_id", "dx_type") if c in groupings.columns]
    table = table.merge(groupings[keep].drop_duplicates("image_id"), on="image_id", how="left")
    for column in ISIC_UNAVAILABLE:
        table[column] = pd.NA
    return table[[c for c in METADATA_COLUMNS if c in table.columns]], ISIC_UNAVAILABLE


def read_source(root: Path) -> SourceTable:
    """Detect the layout of `root` and read it; SourceError says what was expected where."""
    root = Path(root)
    if not root.exists():
        raise SourceError(f"data source {root} does not exist; {EXPECTED_LAYOUTS}")
    if not root.is_dir():
        raise SourceError(f"data source {root} is not a folder; {EXPECTED_LAYOUTS}")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SourceError(f"data source {root} is not readable (permissions)")

    metadata_file = _find_metadata_csv(root)
    ground_truth = _find_file(root, (ISIC_GROUND_TRUTH,))
    if metadata_file is not None:
        table, unavailable = _read_ham_layout(root, metadata_file)
    elif ground_truth is not None:
        table, unavailable = _read_isic_layout(root, ground_truth)
        metadata_file = ground_truth
    else:
        raise SourceError(f"no HAM10000 metadata found in {root}; {EXPECTED_LAYOUTS}")

    images = index_images(root)
    if not images:
        raise SourceError(
            f"no images (ISIC_<digits>.jpg) found under {root}; the metadata is "
            f"{metadata_file}, the images should be next to it or in subfolders"
        )
    table = table.reset_index(drop=True)
    table["source_path"] = [images.get(str(i)) for i in table["image_id"]]
    folders = {p.parent for p in table["source_path"].dropna()}
    if metadata_file.name == ISIC_GROUND_TRUTH:
        layout = "isic2018"
    else:
        layout = "kaggle" if len(folders) > 1 else "flat"
    listed = set(table["image_id"].astype(str))
    return SourceTable(
        root=root,
        layout=layout,
        metadata=table,
        metadata_file=metadata_file,
        unavailable_columns=unavailable,
        unlisted_images=sum(1 for image_id in images if image_id not in listed),
    )


def materialize(
    resolved: ResolvedSource,
    download_params: Mapping[str, Any],
    download_dir: str | Path,
    *,
    progress: bool = True,
) -> Path:
    """The local folder for a resolved source, downloading (and extracting) it into
    `download_dir` (paths.downloads_dir) if needed."""
    if resolved.path is not None:
        return resolved.path
    from skindx.data.download import Archive, fetch, fetch_all

    if resolved.url:
        fetched = fetch(Archive("source", resolved.url), Path(download_dir), progress=progress)
        if not fetched.is_dir():
            raise SourceError(
                f"data.source {resolved.url} should be a zip archive of a HAM10000 folder"
            )
        return fetched
    return fetch_all(download_params, download_dir, progress=progress)


# --- labelled folders for external validation (skindx.evaluation.external) ---------------------
# The same layouts as ingest, read for scoring instead of training: only the labels are needed
# (no lesion groupings, no metadata columns), image files may have any name, and a third layout
# is recognised, a folder per class (`mel/`, `nv/`, ...), which is how most people sort images.
EXTERNAL_LAYOUTS = ("ham-metadata", "isic-onehot", "class-folders")
EXTERNAL_SUFFIXES = (*IMAGE_SUFFIXES, ".webp")  # what the serving API accepts
# ISIC 2019/2020 spell akiec as AK and add classes that HAM10000 (so the model) does not have.
LABEL_ALIASES = {
    "ak": "akiec",
    "actinic keratosis": "akiec",
    "basal cell carcinoma": "bcc",
    "benign keratosis": "bkl",
    "seborrheic keratosis": "bkl",
    "dermatofibroma": "df",
    "melanoma": "mel",
    "nevus": "nv",
    "melanocytic nevus": "nv",
    "vascular lesion": "vasc",
    **{info.name.lower(): code for code, info in CLASS_INFO.items()},
}
ISIC_OTHER_CLASSES = ("scc", "unk")  # ISIC 2019 one-hot columns outside the seven
EXPECTED_LABELLED_LAYOUTS = (
    "expected one of: a metadata CSV with image_id and dx columns (HAM10000_metadata.csv) "
    "plus the images, a one-hot ground-truth CSV (image, MEL, NV, BCC, AKIEC or AK, BKL, DF, "
    "VASC: the ISIC layout) plus the images, or a folder per class named by its code "
    f"({', '.join(c + '/' for c in CLASS_CODES)}) holding the images"
)


def class_code(label: object) -> str | None:
    """A class code for a label as people write it (`MEL`, `AK`, `Melanoma`), or None."""
    if label is None or (isinstance(label, float) and label != label):
        return None
    text = str(label).strip().lower()
    if text in CLASS_CODES:
        return text
    return LABEL_ALIASES.get(text)


@dataclass
class LabelledFolder:
    """A labelled folder read into one table: `image_id`, `dx` (the label as written),
    `label` (its class code; None when it is not one of the seven), `lesion_id` (NA when the
    layout has none) and `source_path` (the image file; None when it is missing)."""

    root: Path
    layout: str  # one of EXTERNAL_LAYOUTS
    table: pd.DataFrame
    labels_file: Path | None  # the CSV the labels came from (None for class folders)
    unlisted_images: int = 0  # image files that no label row mentions
    other_folders: tuple[str, ...] = ()  # class-folders: subfolders not named by a class

    @property
    def n_missing_images(self) -> int:
        return int(self.table["source_path"].isna().sum())


def _find_onehot_csv(root: Path) -> Path | None:
    """ISIC2018_Task3_*GroundTruth.csv, else the one CSV near the top with an image column
    and at least two class columns (ISIC 2019's `image,MEL,NV,BCC,AK,...` included)."""
    named = _find_file(root, (ISIC_GROUND_TRUTH,))
    if named is not None:
        return named
    return _find_table_by_header(
        root,
        lambda columns: (
            "image_id" in columns and sum(class_code(c) is not None for c in columns) >= 2
        ),
    )


def _labelled_from_table(table: pd.DataFrame, images: dict[str, Path]) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "image_id": table["image_id"].astype(str),
            "dx": table["dx"],
            "label": [class_code(v) for v in table["dx"]],
            "lesion_id": table["lesion_id"] if "lesion_id" in table.columns else pd.NA,
        }
    ).reset_index(drop=True)
    out["label"] = pd.Series([class_code(v) for v in out["dx"]], dtype=object)  # None, not NaN
    out["source_path"] = [images.get(i) for i in out["image_id"]]
    return out


def _read_class_folders(root: Path) -> tuple[pd.DataFrame, tuple[str, ...]]:
    rows, others = [], []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name in _SKIP_DIRS or entry.name.startswith("."):
            continue
        code = class_code(entry.name)
        if code is None:
            others.append(entry.name)  # e.g. scc/: its images are rows without a class code
        for image_id, path in sorted(
            index_images(entry, any_name=True, suffixes=EXTERNAL_SUFFIXES).items()
        ):
            rows.append(
                {"image_id": image_id, "dx": entry.name, "label": code, "source_path": path}
            )
    table = pd.DataFrame(rows, columns=["image_id", "dx", "label", "source_path"])
    table["label"] = pd.Series([r["label"] for r in rows], dtype=object)  # None, not NaN
    table.insert(3, "lesion_id", pd.NA)
    return table, tuple(others)


def read_labelled_folder(root: Path) -> LabelledFolder:
    """Detect the layout of a labelled folder (EXTERNAL_LAYOUTS, tried in that order) and read
    it; SourceError says what was expected. Ingest's metadata and one-hot readers, without the
    training-only requirements (lesion groupings, ISIC_<digits> file names)."""
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise SourceError(f"labelled folder {root} {what}; {EXPECTED_LABELLED_LAYOUTS}")
    images = index_images(root, any_name=True, suffixes=EXTERNAL_SUFFIXES)
    metadata_file = _find_metadata_csv(root)
    onehot_file = None if metadata_file is not None else _find_onehot_csv(root)
    others: tuple[str, ...] = ()
    if metadata_file is not None:
        layout, labels_file = "ham-metadata", metadata_file
        table = _labelled_from_table(_read_table(metadata_file), images)
    elif onehot_file is not None:
        layout, labels_file = "isic-onehot", onehot_file
        truth = _read_table(onehot_file)
        truth.columns = [
            class_code(c) if c not in ISIC_OTHER_CLASSES and class_code(c) else c
            for c in truth.columns
        ]
        class_columns = [c for c in truth.columns if c in CLASS_CODES or c in ISIC_OTHER_CLASSES]
        truth["dx"] = onehot_labels(truth, class_columns)
        groupings = _find_file(root, (ISIC_LESION_GROUPINGS,))
        if groupings is not None:
            lesions = _read_table(groupings)
            if {"image_id", "lesion_id"} <= set(lesions.columns):
                lesions = lesions[["image_id", "lesion_id"]].drop_duplicates("image_id")
                truth = truth.merge(lesions, on="image_id", how="left")
        table = _labelled_from_table(truth, images)
    else:
        layout, labels_file = "class-folders", None
        table, others = _read_class_folders(root)
        if table["label"].isna().all():
            found = f" (found the folders {', '.join(others)})" if others else ""
            raise SourceError(f"no labels found in {root}{found}; {EXPECTED_LABELLED_LAYOUTS}")
    listed = set(table["image_id"])
    return LabelledFolder(
        root=root,
        layout=layout,
        table=table,
        labels_file=labels_file,
        unlisted_images=sum(1 for i in images if i not in listed),
        other_folders=others,
    )
