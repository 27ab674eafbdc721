"""predictions.csv: exact round trip, matching by image id, and the reasons it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from skindx.evaluation.predictions import read_predictions, write_predictions
from skindx.inference.classes import CLASS_CODES

CLASSES = list(CLASS_CODES)


def write(path, ids, labels, probs, lesions=None):
    return write_predictions(
        path,
        image_ids=ids,
        lesion_ids=lesions or [f"HAM_{i}" for i in ids],
        labels=np.asarray(labels),
        probs=np.asarray(probs),
        classes=CLASSES,
    )


def random_probs(n, seed):
    p = np.random.default_rng(seed).random((n, len(CLASSES)))
    return p / p.sum(axis=1, keepdims=True)


def test_round_trip_is_exact(tmp_path):
    probs = random_probs(5, 0)
    path = write(tmp_path / "p.csv", list("abcde"), [0, 1, 2, 3, 4], probs)
    back = read_predictions(path)
    assert back.image_ids == list("abcde") and back.lesion_ids[0] == "HAM_a"
    assert back.classes == CLASSES and back.labels.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(back.probs, probs)  # repr floats: bit for bit
    assert back.predicted.tolist() == probs.argmax(axis=1).tolist()
    assert not list(tmp_path.glob(".*.tmp"))


def test_align_matches_by_image_id(tmp_path):
    probs = random_probs(4, 1)
    a = read_predictions(write(tmp_path / "a.csv", list("abcd"), [0, 1, 2, 3], probs))
    order = [2, 0, 3, 1]
    ids = [list("abcd")[i] for i in order]
    b = read_predictions(write(tmp_path / "b.csv", ids, order, probs[order]))
    mine, theirs = a.align(b)
    assert theirs.image_ids == list("abcd")
    np.testing.assert_array_equal(theirs.probs, probs)


def test_align_says_why_it_cannot_compare(tmp_path):
    probs = random_probs(3, 2)
    a = read_predictions(write(tmp_path / "a.csv", list("abc"), [0, 1, 2], probs))
    other = read_predictions(write(tmp_path / "b.csv", list("abd"), [0, 1, 2], probs))
    assert "different test images (2 shared, 1 only in the candidate's" in a.align(other)
    relabelled = read_predictions(write(tmp_path / "c.csv", list("abc"), [0, 1, 3], probs))
    assert "different labels" in a.align(relabelled)


def test_a_file_that_is_not_predictions_is_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("actual,predicted\n1,2\n")
    with pytest.raises(ValueError, match="not a predictions file"):
        read_predictions(bad)
    with pytest.raises(ValueError, match="split table does not match"):
        write(tmp_path / "x.csv", list("ab"), [0], random_probs(2, 3))
