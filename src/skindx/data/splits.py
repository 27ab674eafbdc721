"""Lesion-grouped, class-stratified train/val/test splits, and per-class caps by whole lesion.

Several HAM10000 images show the same lesion, so every operation here moves whole lesions:
an image never lands in another split than its siblings, or the test score leaks.

Splitting is a seeded greedy per class: the lesions of a class are shuffled, one small lesion
seeds each split (so every class is present in every split), then the rest, largest first,
go to the split furthest below its target image count. This keeps each class within about
one lesion of the requested fractions, which StratifiedGroupKFold cannot promise for 70/15/15.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from skindx.data.errors import DataError

SPLITS = ("train", "val", "test")
# Rows of metadata.csv say where they came from once ingest adds a second source; reviewed
# cases from the prediction log (skindx.data.feedback) only ever train: validation and test
# stay the main dataset's fixed, lesion-grouped splits, so models compare across promotions.
ORIGIN_COLUMN = "origin"
TRAIN_ONLY_ORIGINS = ("feedback",)


def split_fractions(split_params: Mapping[str, Any]) -> dict[str, float]:
    fractions = {s: float(split_params.get(s, 0.0)) for s in SPLITS}
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise DataError(
            f"data.split fractions must be >= 0 and sum to 1, got {fractions} "
            f"(sum {sum(fractions.values()):.4f})"
        )
    if fractions["train"] <= 0:
        raise DataError("data.split.train must be > 0")
    return fractions


def train_only(df: pd.DataFrame) -> pd.Series:
    """True for the rows that go to the training split whatever the split fractions say."""
    if ORIGIN_COLUMN not in df.columns:
        return pd.Series(False, index=df.index)
    return df[ORIGIN_COLUMN].isin(TRAIN_ONLY_ORIGINS)


def lesion_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion: its class (the majority dx of its images) and image count."""
    groups = lesion_ids(df)
    table = pd.DataFrame({"lesion": groups, "dx": df["dx"].astype(str)})
    counts = table.groupby(["lesion", "dx"], sort=True).size().reset_index(name="n")
    counts = counts.sort_values(["lesion", "n"], ascending=[True, False], kind="stable")
    dx = counts.drop_duplicates("lesion").set_index("lesion")["dx"]
    sizes = table.groupby("lesion", sort=True).size()
    return pd.DataFrame({"dx": dx, "n": sizes}).sort_index()


def lesion_ids(df: pd.DataFrame) -> pd.Series:
    """The grouping key: lesion_id, or the image's own id where the lesion is unknown."""
    return df["lesion_id"].astype(object).where(df["lesion_id"].notna(), df["image_id"]).astype(str)


def cap_by_lesion(df: pd.DataFrame, max_per_class: int | None, seed: int) -> pd.DataFrame:
    """At most `max_per_class` images per class, choosing whole lesions at random.

    Lesions are visited in a seeded random order and kept while they fit under the cap, so
    the cap is filled as closely as whole lesions allow (never exceeded, except that a class
    keeps at least its smallest lesion).
    """
    if max_per_class is None:
        return df
    cap = int(max_per_class)
    if cap < 1:
        raise DataError(f"per-class cap must be >= 1, got {max_per_class}")
    rng = np.random.default_rng(seed)
    lesions = lesion_table(df)
    keep: list[str] = []
    for dx in sorted(lesions["dx"].unique()):
        members = lesions[lesions["dx"] == dx]
        total, chosen = 0, []
        for i in rng.permutation(len(members)):
            n = int(members["n"].iloc[i])
            if total + n <= cap:
                chosen.append(members.index[i])
                total += n
                if total == cap:
                    break
        keep += chosen or [members["n"].idxmin()]
    return df[lesion_ids(df).isin(set(keep))]


def assign_splits(df: pd.DataFrame, fractions: Mapping[str, float], seed: int) -> pd.Series:
    """The split name of each row (index aligned with `df`)."""
    names = [s for s in SPLITS if fractions.get(s, 0.0) > 0]
    rng = np.random.default_rng(seed)
    lesions = lesion_table(df)
    lesion_split: dict[str, str] = {}
    for dx in sorted(lesions["dx"].unique()):
        members = lesions[lesions["dx"] == dx]
        if len(members) < len(names):
            raise DataError(
                f"class {dx!r} has {len(members)} lesion(s) ({int(members['n'].sum())} images); "
                f"at least {len(names)} are needed to put it in every split ({', '.join(names)}). "
                "Raise data.max_per_class or use more data."
            )
        order = members.iloc[rng.permutation(len(members))]
        total = int(order["n"].sum())
        target = {s: fractions[s] * total for s in names}
        count = dict.fromkeys(names, 0)
        # Seed each split with one of the smallest lesions, the smallest split first.
        by_size = order.sort_values("n", kind="stable")
        seeds = list(by_size.index[: len(names)])
        for split, lesion in zip(sorted(names, key=lambda s: fractions[s]), seeds, strict=True):
            lesion_split[lesion] = split
            count[split] += int(order.loc[lesion, "n"])
        rest = order.drop(index=seeds).sort_values("n", ascending=False, kind="stable")
        for lesion, n in rest["n"].items():
            split = max(names, key=lambda s: target[s] - count[s])
            lesion_split[lesion] = split
            count[split] += int(n)
    return lesion_ids(df).map(lesion_split).rename("split")


def class_counts(df: pd.DataFrame, classes: Sequence[str]) -> dict[str, int]:
    counts = df["dx"].value_counts()
    return {c: int(counts.get(c, 0)) for c in classes}


def class_weights(train: pd.DataFrame, classes: Sequence[str]) -> list[float]:
    """Inverse class frequency on the training split, scaled to mean 1."""
    counts = np.array(list(class_counts(train, classes).values()), dtype=np.float64)
    if (counts == 0).any():
        empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
        raise DataError(f"no training images for class(es) {empty}: cannot weight them")
    inverse = 1.0 / counts
    return [float(w) for w in inverse / inverse.mean()]
