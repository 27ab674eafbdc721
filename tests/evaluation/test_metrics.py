"""Metric functions against hand-computed cases and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from skindx.evaluation.metrics import (
    accuracy,
    balanced_accuracy,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    per_class_scores,
    reliability_table,
    roc_auc,
    roc_curve,
)

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def test_hand_computed_case():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    # recalls 1/2, 2/2, 1/2; precisions 1/2, 2/3, 1/1
    assert balanced_accuracy(y_true, y_pred, 3) == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    f1 = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5]
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(np.mean(f1))
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_balanced_accuracy_is_not_accuracy_on_imbalanced_data():
    # 90 nevi all right, 10 melanomas all called nevus: accuracy 0.9, balanced accuracy 0.5
    y_true = np.array([5] * 90 + [4] * 10)
    y_pred = np.full(100, 5)
    assert accuracy(y_true, y_pred) == pytest.approx(0.9)
    assert balanced_accuracy(y_true, y_pred, 7) == pytest.approx(0.5)


def test_hand_computed_auc_and_roc_points():
    y = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.1])
    # pairs (pos, neg): (.9,.8) (.9,.1) (.4,.8) (.4,.1) -> 3 of 4 ranked right
    assert roc_auc(y, scores) == pytest.approx(0.75)
    fpr, tpr = roc_curve(y, scores)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert roc_auc(y, np.full(4, 0.3)) == pytest.approx(0.5)  # all tied
    assert np.isnan(roc_auc(np.ones(4), scores))  # one class only


def test_hand_computed_ece():
    # every prediction 80 % confident, half of them right: ECE = |0.5 - 0.8| = 0.3
    probs = np.tile([[0.8, 0.2]], (10, 1))
    y = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(y, probs, 15) == pytest.approx(0.3)
    # two bins: conf 0.9 all right (5), conf 0.6 three of five right -> (0.1 + 0)/2
    probs = np.array([[0.9, 0.1]] * 5 + [[0.6, 0.4]] * 5)
    y = np.array([0] * 5 + [0, 0, 0, 1, 1])
    assert expected_calibration_error(y, probs, 15) == pytest.approx(0.05)
    table = reliability_table(y, probs, 15)
    assert [r["count"] for r in table] == [5, 5]
    assert all(r["bin_lower"] < r["confidence"] <= r["bin_upper"] for r in table)


def _random_case(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    logits = rng.normal(size=(n, 7)) + 1.5 * np.eye(7)[y]  # informative but imperfect
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scikit_learn(seed):
    y, probs = _random_case(seed)
    pred = probs.argmax(axis=1)
    assert balanced_accuracy(y, pred, 7) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert macro_f1(y, pred, 7) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(7), zero_division=0)
    ours = per_class_scores(confusion_matrix(y, pred, 7))
    np.testing.assert_allclose(ours["precision"], p)
    np.testing.assert_allclose(ours["recall"], r)
    np.testing.assert_allclose(ours["f1"], f)
    np.testing.assert_array_equal(ours["support"], s)
    np.testing.assert_array_equal(
        confusion_matrix(y, pred, 7), skm.confusion_matrix(y, pred, labels=range(7))
    )
    for c in range(7):
        # seed 2: scores rounded to one decimal, so that many are tied
        scores = np.round(probs[:, c], 1) if seed == 2 else probs[:, c]
        assert roc_auc(y == c, scores) == pytest.approx(skm.roc_auc_score(y == c, scores))
        sk_fpr, sk_tpr, _ = skm.roc_curve(y == c, scores, drop_intermediate=False)
        fpr, tpr = roc_curve(y == c, scores)
        np.testing.assert_allclose(fpr[1:], sk_fpr[1:])  # sklearn's first point is (0, 0) at +inf
        np.testing.assert_allclose(tpr[1:], sk_tpr[1:])
    report = classification_report(y, probs, CLASSES)
    assert report["roc_auc_macro"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )


def test_classes_missing_from_the_truth_are_left_out_like_scikit_learn():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])  # class 2 predicted, never true
    with pytest.warns(UserWarning):
        expected = skm.balanced_accuracy_score(y, pred)
    assert balanced_accuracy(y, pred, 3) == pytest.approx(expected)


def test_report_uses_argmax_and_names_melanoma():
    y = np.array([4, 4, 4, 5])
    probs = np.zeros((4, 7))
    probs[[0, 1], 4] = 0.9  # two melanomas found
    probs[2, 5] = 0.9  # one called a nevus
    probs[3, 5] = 0.9
    probs += 0.01
    report = classification_report(y, probs / probs.sum(1, keepdims=True), CLASSES)
    assert report["melanoma_sensitivity"] == pytest.approx(2 / 3)
    assert report["per_class"]["mel"]["recall"] == pytest.approx(2 / 3)
    assert report["per_class"]["nv"]["precision"] == pytest.approx(1 / 2)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert report["per_class"]["mel"]["support"] == 3
