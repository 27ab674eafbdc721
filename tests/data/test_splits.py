"""Splits on the real HAM10000 metadata (10,015 images, 7,470 lesions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skindx.data.errors import DataError
from skindx.data.splits import (
    SPLITS,
    assign_splits,
    cap_by_lesion,
    class_weights,
    lesion_table,
    split_fractions,
)
from tests.data.conftest import CLASSES

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


@pytest.fixture(scope="module")
def meta(ham_metadata: pd.DataFrame) -> pd.DataFrame:
    return ham_metadata.copy()


@pytest.fixture(scope="module")
def split(meta: pd.DataFrame) -> pd.Series:
    return assign_splits(meta, FRACTIONS, seed=42)


def test_every_image_gets_a_split(meta, split):
    assert split.index.equals(meta.index)
    assert set(split) == set(SPLITS) and split.notna().all()


def test_no_lesion_is_in_two_splits(meta, split):
    per_lesion = (
        pd.DataFrame({"lesion": meta["lesion_id"], "split": split})
        .groupby("lesion")["split"]
        .nunique()
    )
    assert (per_lesion == 1).all()


def test_every_class_is_in_every_split_near_its_fraction(meta, split):
    table = pd.crosstab(meta["dx"], split)
    assert (table[list(SPLITS)] > 0).all().all()
    shares = table.div(table.sum(axis=1), axis=0)
    for name, fraction in FRACTIONS.items():
        # within a few points of the target: whole lesions of up to 6 images move together
        assert (shares[name] - fraction).abs().max() < 0.02, shares


def test_same_seed_same_split_other_seed_other_split(meta, split):
    assert assign_splits(meta, FRACTIONS, seed=42).equals(split)
    other = assign_splits(meta, FRACTIONS, seed=7)
    assert (other != split).mean() > 0.2


def test_max_per_class_keeps_whole_lesions_up_to_the_cap(meta):
    capped = cap_by_lesion(meta, 50, seed=0)
    counts = capped["dx"].value_counts()
    assert set(counts.index) == set(CLASSES)
    assert (counts <= 50).all() and (counts >= 45).all()  # filled as far as whole lesions allow
    full_sizes = meta.groupby("lesion_id").size()
    kept_sizes = capped.groupby("lesion_id").size()
    assert kept_sizes.equals(full_sizes[kept_sizes.index])  # no lesion is cut
    assert not cap_by_lesion(meta, 50, seed=1).index.equals(capped.index)
    assert cap_by_lesion(meta, None, seed=0) is meta


def test_train_cap_by_lesion_leaves_val_and_test_complete(meta, split):
    train = meta[split == "train"]
    capped_train = cap_by_lesion(train, 300, seed=42)
    counts = capped_train["dx"].value_counts()
    assert counts.max() <= 300 and counts["nv"] >= 290
    assert counts["df"] == (train["dx"] == "df").sum()  # classes under the cap are untouched


def test_class_with_too_few_lesions_is_a_clear_error(meta):
    lesions = lesion_table(meta)
    two_df_lesions = lesions[lesions["dx"] == "df"].index[:2]
    subset = meta[(meta["dx"] != "df") | meta["lesion_id"].isin(two_df_lesions)]
    with pytest.raises(DataError, match="class 'df' has 2 lesion"):
        assign_splits(subset, FRACTIONS, seed=0)


def test_split_fractions_must_sum_to_one():
    assert split_fractions({"train": 0.8, "val": 0.1, "test": 0.1}) == {
        "train": 0.8,
        "val": 0.1,
        "test": 0.1,
    }
    with pytest.raises(DataError, match="sum to 1"):
        split_fractions({"train": 0.8, "val": 0.3, "test": 0.1})


def test_zero_fraction_split_stays_empty(meta):
    split = assign_splits(meta, {"train": 0.8, "val": 0.2, "test": 0.0}, seed=0)
    assert set(split) == {"train", "val"}


def test_class_weights_are_inverse_frequency_with_mean_one(meta, split):
    train = meta[split == "train"]
    weights = np.array(class_weights(train, CLASSES))
    counts = train["dx"].value_counts()[CLASSES].to_numpy()
    assert weights.mean() == pytest.approx(1.0)
    assert (weights * counts) == pytest.approx(np.full(len(CLASSES), (weights * counts)[0]))
    with pytest.raises(DataError, match="no training images"):
        class_weights(train[train["dx"] != "df"], CLASSES)
