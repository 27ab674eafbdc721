"""Validate `data/raw/` with a Great Expectations (GX Core 1.x) suite.

The image checks (exists, decodes, RGB, shorter side >= 64 px, no byte-identical duplicate,
content matches the metadata sha256) are computed per row first and then asserted by GX
expectations like the metadata checks, so every check shows up in the Data Docs site with
its offending rows. Critical failures stop the pipeline; warnings (demographic columns that
training does not use, duplicate images within one lesion) are reported only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from skindx.data.images import inspect_image
from skindx.data.ingest import RAW_COLUMNS, read_manifest, read_metadata

# GX reads this when first imported (imported lazily below: it is slow): no telemetry.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

MIN_SIDE = 64
MAX_AGE_NULL_FRACTION = 0.02
SEXES = ("male", "female", "unknown")
LOCALIZATIONS = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "unknown",
    "upper extremity",
)
# HAM10000's confirmation types, and `review`: a reviewer's label from POST /feedback
DX_TYPES = ("histo", "follow_up", "consensus", "confocal", "review")
# ids of reviewed cases from the prediction log (skindx.data.feedback): FB_<16 hex of sha256>
FEEDBACK_ID = r"FB_[0-9a-f]{16}"
EXAMPLES = 5
SUITE_NAME = "ham10000_raw"


@dataclass
class Failure:
    expectation: str
    column: str | None
    description: str
    severity: str
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def describe(self) -> str:
        where = f" [{self.column}]" if self.column else ""
        line = f"{self.description}{where} ({self.expectation}, {self.severity})"
        if self.unexpected_count is not None:
            line += f": {self.unexpected_count} offending row(s)"
        if self.error:
            line += f": {self.error}"
        for example in self.examples:
            line += "\n      e.g. " + ", ".join(f"{k}={v}" for k, v in example.items())
        return line


@dataclass
class ValidationReport:
    success: bool
    n_rows: int
    n_expectations: int
    failed: list[Failure]
    warnings: list[Failure]
    skipped: list[str]
    passed: list[str]
    data_hash: str | None = None
    docs_index: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "n_expectations": self.n_expectations,
            "n_failed": len(self.failed),
            "n_warnings": len(self.warnings),
            "n_rows": self.n_rows,
            "failed": [f.to_dict() for f in self.failed],
            "warnings": [f.to_dict() for f in self.warnings],
            "skipped": self.skipped,
            "data_hash": self.data_hash,
        }

    def format(self) -> str:
        lines = [f"validated {self.n_rows} rows against {self.n_expectations} expectations"]
        lines += [f"  ok    {name}" for name in self.passed]
        lines += [f"  WARN  {f.describe()}" for f in self.warnings]
        lines += [f"  FAIL  {f.describe()}" for f in self.failed]
        lines += [f"  skip  {s}" for s in self.skipped]
        if self.docs_index:
            lines.append(f"Data Docs: {self.docs_index}")
        return "\n".join(lines)

    def failure_message(self) -> str:
        names = "\n  ".join(f.describe() for f in self.failed)
        return f"{len(self.failed)} critical data expectation(s) failed:\n  {names}"


def inspect_images(
    meta: pd.DataFrame, raw_dir: Path, *, workers: int | None = None, progress: bool = True
) -> pd.DataFrame:
    """Per-row image facts as columns for the suite (None where not applicable)."""
    paths = meta["path"].fillna("").astype(str)
    unique = sorted(set(paths) - {""})
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        checks = dict(
            zip(
                unique,
                tqdm(
                    pool.map(lambda rel: inspect_image(Path(raw_dir) / rel), unique),
                    total=len(unique),
                    desc="validate: checking images",
                    unit="img",
                    disable=not progress,
                    mininterval=1.0,
                ),
                strict=True,
            )
        )
    first_use = ~paths.duplicated()
    rows = []
    for rel, first in zip(paths, first_use, strict=True):
        check = checks.get(rel)
        if check is None:
            rows.append({"image_exists": False, "image_error": "no path"})
            continue
        rows.append(
            {
                "image_exists": check.exists,
                "image_decodes": check.decodes,
                "image_mode": check.mode,
                "image_min_side": check.min_side,
                # Two rows naming the same file are a duplicated id, not a duplicated image.
                "image_sha256": check.sha256 if first else None,
                "image_error": check.error,
            }
        )
    facts = pd.DataFrame(
        rows,
        index=meta.index,
        columns=[
            "image_exists",
            "image_decodes",
            "image_mode",
            "image_min_side",
            "image_sha256",
            "image_error",
        ],
    ).astype(object)
    facts = facts.where(facts.notna(), None)
    if "sha256" in meta.columns:
        # Plain lists: pandas 3 would turn None into NaN in an inferred string column.
        actual = [checks[p].sha256 if p in checks else None for p in paths]
        matches = [
            None if a is None or pd.isna(r) else a == r
            for a, r in zip(actual, meta["sha256"].tolist(), strict=True)
        ]
        facts["image_sha256_matches"] = pd.Series(matches, index=meta.index, dtype=object)
    facts["image_duplicate_of"] = duplicates_in_other_lesions(facts["image_sha256"], meta)
    return facts


def duplicates_in_other_lesions(sha256: pd.Series, meta: pd.DataFrame) -> pd.Series:
    """For each image, the image_ids (with lesion) of byte-identical images that belong to
    another lesion, else None. Such a copy would leak across splits or carry two labels;
    a copy within one lesion (HAM10000 has two such pairs) stays in one split and is harmless.
    """
    ids = meta["image_id"].astype(str) if "image_id" in meta.columns else meta.index.astype(str)
    lesions = meta["lesion_id"].astype(str) if "lesion_id" in meta.columns else ids
    result = pd.Series(None, index=meta.index, dtype=object)
    valid = sha256.notna()
    groups = sha256[valid].groupby(sha256[valid]).groups
    for rows in groups.values():
        if len(rows) < 2:
            continue
        for row in rows:
            others = [f"{ids[o]} ({lesions[o]})" for o in rows if lesions[o] != lesions[row]]
            if others:
                result[row] = ", ".join(others)
    return result


def build_expectations(
    classes: Sequence[str], columns: Sequence[str], unavailable: Sequence[str] = ()
) -> tuple[list[Any], list[str]]:
    """The suite, as GX expectation objects, plus the checks skipped for this layout."""
    import great_expectations as gx

    E = gx.expectations
    critical, warning = "critical", "warning"
    suite: list[Any] = [
        E.ExpectColumnToExist(column=c, description=f"column {c} is present", severity=critical)
        for c in RAW_COLUMNS
    ]
    suite += [
        E.ExpectColumnValuesToBeInSet(
            column="dx",
            value_set=list(classes),
            description="dx is one of the configured classes",
            severity=critical,
        ),
        E.ExpectColumnValuesToNotBeNull(
            column="dx", description="dx is present", severity=critical
        ),
        E.ExpectColumnValuesToNotBeNull(
            column="image_id", description="image_id is present", severity=critical
        ),
        E.ExpectColumnValuesToBeUnique(
            column="image_id", description="image_id is unique", severity=critical
        ),
        E.ExpectColumnValuesToMatchRegex(
            column="image_id",
            regex=rf"^(?:ISIC_\d{{7}}|{FEEDBACK_ID})$",
            description="image_id matches ISIC_\\d{7} (or FB_<hex>, a reviewed case)",
            severity=critical,
        ),
        E.ExpectColumnValuesToNotBeNull(
            column="lesion_id", description="lesion_id is present", severity=critical
        ),
        E.ExpectColumnValuesToMatchRegex(
            column="lesion_id",
            regex=rf"^(?:HAM_\d{{7}}|{FEEDBACK_ID})$",
            description="lesion_id matches HAM_\\d{7} (or FB_<hex>, a reviewed case)",
            severity=critical,
        ),
        E.ExpectColumnValuesToBeInSet(
            column="dx_type",
            value_set=list(DX_TYPES),
            description="dx_type is a known confirmation type",
            severity=warning,
        ),
        E.ExpectColumnValuesToBeInSet(
            column="image_exists",
            value_set=[True],
            description="every image exists",
            severity=critical,
        ),
        E.ExpectColumnValuesToBeInSet(
            column="image_decodes",
            value_set=[True],
            description="every image decodes",
            severity=critical,
        ),
        E.ExpectColumnValuesToBeInSet(
            column="image_mode",
            value_set=["RGB"],
            description="every image is RGB",
            severity=critical,
        ),
        E.ExpectColumnValuesToBeBetween(
            column="image_min_side",
            min_value=MIN_SIDE,
            description=f"every image is at least {MIN_SIDE} px on its shorter side",
            severity=critical,
        ),
        E.ExpectColumnValuesToBeNull(
            column="image_duplicate_of",
            description="no image is a byte-identical duplicate of another lesion's image",
            severity=critical,
        ),
        E.ExpectColumnValuesToBeUnique(
            column="image_sha256",
            description="no image is a byte-identical duplicate of another",
            severity=warning,
        ),
    ]
    if "image_sha256_matches" in columns:
        suite.append(
            E.ExpectColumnValuesToBeInSet(
                column="image_sha256_matches",
                value_set=[True],
                description="every image matches its metadata sha256",
                severity=critical,
            )
        )
    demographic = [
        E.ExpectColumnValuesToBeBetween(
            column="age",
            min_value=0,
            max_value=120,
            description="age is in [0, 120] or null",
            severity=warning,
        ),
        E.ExpectColumnValuesToNotBeNull(
            column="age",
            mostly=1 - MAX_AGE_NULL_FRACTION,
            description=f"age is null in at most {MAX_AGE_NULL_FRACTION:.0%} of rows",
            severity=warning,
        ),
        E.ExpectColumnValuesToBeInSet(
            column="sex",
            value_set=list(SEXES),
            description="sex is male, female or unknown",
            severity=warning,
        ),
        E.ExpectColumnValuesToBeInSet(
            column="localization",
            value_set=list(LOCALIZATIONS),
            description="localization is a known body site",
            severity=warning,
        ),
    ]
    skipped = []
    for expectation in demographic:
        if expectation.column in unavailable:
            skipped.append(
                f"{expectation.description} (the source layout has no {expectation.column})"
            )
        else:
            suite.append(expectation)
    return suite, skipped


def _examples(result: dict[str, Any], column: str | None) -> list[dict[str, Any]]:
    examples = []
    for item in (result.get("unexpected_index_list") or [])[:EXAMPLES]:
        if isinstance(item, dict):
            examples.append(
                {
                    k: _plain(v)
                    for k, v in item.items()
                    if v is not None and not (isinstance(v, float) and pd.isna(v))
                }
            )
        else:
            examples.append({"row": _plain(item)})
    if not examples:
        examples = [
            {column or "value": _plain(v)}
            for v in (result.get("partial_unexpected_list") or [])[:EXAMPLES]
        ]
    return examples


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def run_suite(
    frame: pd.DataFrame, expectations: list[Any], docs_dir: Path | None
) -> tuple[list[Any], str | None]:
    """Validate `frame` with a GX checkpoint; optionally build the Data Docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    actions = []
    if docs_dir is not None:
        docs_dir = Path(docs_dir).resolve()
        shutil.rmtree(docs_dir, ignore_errors=True)
        context.add_data_docs_site(
            "skindx",
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["skindx"]))
    batch = (
        context.data_sources.add_pandas("skindx")
        .add_dataframe_asset("raw_metadata")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="raw_metadata", data=batch, suite=suite)
    )
    index_columns = [c for c in ("image_id", "path", "image_error") if c in frame.columns]
    result_format: dict[str, Any] = {
        "result_format": "COMPLETE",
        "partial_unexpected_count": EXAMPLES,
    }
    if index_columns:
        result_format["unexpected_index_column_names"] = index_columns
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="validate",
            validation_definitions=[definition],
            actions=actions,
            result_format=result_format,
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    results = [r for run in outcome.run_results.values() for r in run.results]
    docs_index = (
        str(docs_dir / "index.html")
        if docs_dir is not None and (docs_dir / "index.html").exists()
        else None
    )
    return results, docs_index


def validate(
    raw_dir: Path,
    classes: Sequence[str],
    *,
    docs_dir: Path | None = None,
    progress: bool = True,
) -> ValidationReport:
    """Run the suite on `raw_dir` (metadata + images); never raises for bad data."""
    raw_dir = Path(raw_dir)
    meta = read_metadata(raw_dir)
    manifest = read_manifest(raw_dir)
    unavailable = manifest.get("unavailable_columns", [])
    if "path" in meta.columns:
        frame = pd.concat([meta, inspect_images(meta, raw_dir, progress=progress)], axis=1)
    else:
        frame = meta.copy()
    # GX ignores None in column-map expectations; NaN in object columns would count as a value.
    frame = frame.astype(object).where(frame.notna(), None)
    expectations, skipped = build_expectations(classes, list(frame.columns), unavailable)
    results, docs_index = run_suite(frame, expectations, docs_dir)

    failed, warnings, passed = [], [], []
    for result in results:
        config = result.expectation_config
        column = config.kwargs.get("column")
        severity = str(getattr(config.severity, "value", config.severity) or "critical")
        description = config.description or config.type
        if result.success:
            passed.append(f"{description}" + (f" [{column}]" if column else ""))
            continue
        res = result.result or {}
        info = result.exception_info or {}
        error = info.get("exception_message") if info.get("raised_exception") else None
        if config.type == "expect_column_to_exist":
            error = f"missing from metadata.csv (has: {', '.join(meta.columns)})"
        failure = Failure(
            expectation=config.type,
            column=column,
            description=description,
            severity=severity,
            unexpected_count=res.get("unexpected_count"),
            unexpected_percent=round(res["unexpected_percent"], 3)
            if res.get("unexpected_percent") is not None
            else None,
            examples=_examples(res, column),
            error=error,
        )
        (failed if severity == "critical" else warnings).append(failure)
    return ValidationReport(
        success=not failed,
        n_rows=len(meta),
        n_expectations=len(results),
        failed=failed,
        warnings=warnings,
        skipped=skipped,
        passed=passed,
        data_hash=manifest.get("data_hash"),
        docs_index=docs_index,
    )


def write_summary(report: ValidationReport, path: Path) -> Path:
    """The summary (paths.validation_summary) that DVC shows as a metric and preprocess checks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.summary(), indent=2, default=str) + "\n")
    return path
