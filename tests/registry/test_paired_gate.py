"""The significance gate: promote compares candidate and champion with a paired, lesion-grouped
bootstrap on the same test images (their packaged predictions.csv), and falls back to a
documented rule, saying why, when it cannot pair them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from skindx.evaluation.bootstrap import bootstrap_intervals
from skindx.evaluation.predictions import PREDICTIONS_FILE, write_predictions
from skindx.export.card import file_hashes, write_card
from skindx.inference.classes import CLASS_CODES
from skindx.inference.model import verify_package
from skindx.registry import promote, register_package
from skindx.registry.stores import LocalChampionStore

# each test drives a real MLflow registry (seconds apiece): in `make test`, not test-fast
pytestmark = pytest.mark.slow

CLASSES = list(CLASS_CODES)
N, PER_LESION = 600, 3
RNG = np.random.default_rng(12)
LABELS = RNG.integers(0, len(CLASSES), N)
LESIONS = [f"HAM_{i // PER_LESION:07d}" for i in range(N)]
IMAGE_IDS = [f"ISIC_{i:07d}" for i in range(N)]


def noisy(accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = (LABELS + rng.integers(1, len(CLASSES), N)) % len(CLASSES)
    return np.where(rng.random(N) < accuracy, LABELS, wrong)


WEAK, STRONG = noisy(0.45, 1), noisy(0.75, 2)


def metrics_of(pred: np.ndarray) -> dict:
    """What evaluate would write for these predictions (point values and intervals)."""
    from skindx.evaluation.metrics import classification_report

    report = classification_report(LABELS, np.eye(len(CLASSES))[pred], CLASSES)
    intervals = bootstrap_intervals(LABELS, pred, CLASSES, groups=LESIONS, n_resamples=500)
    out = {k: report[k] for k in ("balanced_accuracy", "accuracy", "macro_f1")}
    for name in ("balanced_accuracy", "macro_f1"):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = intervals[name].low, intervals[name].high
    return out


def make_package(source, dest, version, pred, *, image_ids=IMAGE_IDS, predictions=True):
    """A copy of the session package with these test predictions and their metrics, sealed."""
    pkg = shutil.copytree(source, dest)
    if predictions:
        probs = np.full((N, len(CLASSES)), 0.02)
        probs[np.arange(N), pred] = 1 - 0.02 * (len(CLASSES) - 1)
        write_predictions(
            pkg / PREDICTIONS_FILE,
            image_ids=image_ids,
            lesion_ids=LESIONS,
            labels=LABELS,
            probs=probs,
            classes=CLASSES,
        )
    card = json.loads((pkg / "model.json").read_text())
    card.update(version=version, metrics=metrics_of(pred), files=file_hashes(pkg))
    write_card(card, pkg)
    verify_package(pkg)
    return pkg


@pytest.fixture
def local(tmp_path, monkeypatch, packaged_model_dir):
    """promote() with the serving/model champion store (SKINDX_TRACKING=off)."""
    monkeypatch.setenv("SKINDX_TRACKING", "off")
    serving = tmp_path / "serving" / "model"
    log = tmp_path / "promotions.jsonl"

    def run(version, pred, **kwargs):
        options = {k: kwargs.pop(k) for k in ("image_ids", "predictions") if k in kwargs}
        pkg = make_package(packaged_model_dir, tmp_path / f"v{version}", version, pred, **options)
        return promote(
            pkg,
            registered_model="skindx-resnet50",
            serving_dir=serving,
            log_path=log,
            store=LocalChampionStore(serving),
            n_resamples=1000,
            **kwargs,
        )

    run.serving = serving
    run.log = log
    return run


def test_two_identical_models_never_displace_each_other(local):
    assert local("1", WEAK)["decision"] == "promoted"
    twin = local("2", WEAK.copy())
    assert twin["decision"] == "rejected" and "not significant" in twin["reason"]
    assert twin["comparison"]["delta"] == 0 and twin["comparison"]["rule"] == "paired_bootstrap"
    assert twin["comparison"]["ci_low"] == 0 == twin["comparison"]["ci_high"]
    assert verify_package(local.serving)["version"] == "1"
    # the same with min_delta 0: an identical model is no improvement
    assert local("3", WEAK.copy(), min_delta=0.0)["decision"] == "rejected"
    assert verify_package(local.serving)["version"] == "1"


def test_a_clearly_better_model_is_promoted_with_its_difference_and_interval(local):
    local("1", WEAK)
    record = local("2", STRONG)
    assert record["decision"] == "promoted" and "better, significantly" in record["reason"]
    comparison = record["comparison"]
    assert comparison["delta"] > 0.2 and 0 < comparison["ci_low"] < comparison["delta"]
    assert comparison["ci_high"] > comparison["delta"] and comparison["p_value"] < 0.01
    assert comparison["n_images"] == N and comparison["n_groups"] == N // PER_LESION
    assert f"delta {comparison['delta']:+.4f}" in record["reason"]
    assert "95% CI [" in record["reason"]
    assert verify_package(local.serving)["version"] == "2"
    # and the weaker one cannot come back
    assert local("3", WEAK.copy())["decision"] == "rejected"
    lines = [json.loads(line) for line in local.log.read_text().splitlines()]
    assert [line["decision"] for line in lines] == ["promoted", "promoted", "rejected"]
    assert lines[1]["comparison"] == comparison


def test_noise_above_min_delta_is_not_promoted(local):
    """A candidate that differs on a few dozen images, a little better on balance: its point
    estimate clears min_delta, but the paired interval includes 0."""
    local("1", WEAK)
    candidate = WEAK.copy()
    rng = np.random.default_rng(5)
    wrong, right = np.flatnonzero(WEAK != LABELS), np.flatnonzero(WEAK == LABELS)
    fix = rng.choice(wrong, 22, replace=False)
    candidate[fix] = LABELS[fix]
    breaks = rng.choice(right, 17, replace=False)
    candidate[breaks] = (LABELS[breaks] + 1) % len(CLASSES)
    record = local("2", candidate, min_delta=0.005)
    comparison = record["comparison"]
    assert comparison["delta"] >= 0.005  # the old rule would have promoted it
    assert comparison["ci_low"] < 0 < comparison["ci_high"]
    assert record["decision"] == "rejected" and "not significant" in record["reason"]


def test_force_promotes_and_still_logs_the_comparison(local):
    local("1", STRONG)
    record = local("2", WEAK, force=True)
    assert record["decision"] == "promoted" and "promote.force" in record["reason"]
    assert record["comparison"]["delta"] < 0 and record["comparison"]["ci_high"] < 0


def test_champion_without_predictions_falls_back_and_says_so(local):
    local("1", WEAK, predictions=False)
    record = local("2", WEAK.copy())
    assert "no paired test: champion v1 carries no predictions.csv" in record["reason"]
    comparison = record["comparison"]
    assert comparison["paired"] is False and comparison["rule"] == "unpaired"
    # the candidate's own lower bound is below the champion's value: rejected
    assert record["decision"] == "rejected" and "unpaired rule" in record["reason"]
    better = local("3", STRONG)
    assert better["decision"] == "promoted" and "unpaired rule" in better["reason"]


def test_predictions_on_other_images_fall_back_and_say_so(local):
    local("1", WEAK)
    other_ids = [f"ISIC_{i + 1:07d}" for i in range(N)]
    record = local("2", STRONG, image_ids=other_ids)
    assert "they are on different test images (599 shared" in record["reason"]
    assert record["comparison"]["rule"] == "unpaired" and record["decision"] == "promoted"


@pytest.mark.slow
def test_mlflow_champion_predictions_come_from_the_registry(
    packaged_model_dir, tmp_path, monkeypatch
):
    """serving/model gone: the champion's predictions are read from its stored package (card
    checked against card_sha256), the twin is rejected, serving/model restored; the version's
    tags carry the difference and its interval."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SKINDX_TRACKING", "on")
    params = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    versions = []
    for name, pred in (("champ", WEAK), ("twin", WEAK.copy())):
        pkg = make_package(packaged_model_dir, tmp_path / name, name, pred)
        register_package(pkg, "skindx-resnet50", mlflow_params=params)
        versions.append(pkg)
    kwargs = {
        "registered_model": "skindx-resnet50",
        "serving_dir": tmp_path / "serving" / "model",
        "log_path": tmp_path / "p.jsonl",
        "mlflow_params": params,
        "n_resamples": 500,
    }
    assert promote(versions[0], **kwargs)["decision"] == "promoted"
    shutil.rmtree(tmp_path / "serving" / "model")
    record = promote(versions[1], **kwargs)
    assert record["decision"] == "rejected" and "not significant" in record["reason"]
    assert record["comparison"]["rule"] == "paired_bootstrap" and "restored" in record["reason"]
    tags = (
        MlflowClient(tracking_uri=params["tracking_uri"])
        .get_model_version("skindx-resnet50", "2")
        .tags
    )
    assert tags["promotion.rule"] == "paired_bootstrap"
    assert float(tags["promotion.delta"]) == 0 and float(tags["promotion.ci_low"]) == 0


def test_the_package_carries_evaluates_predictions_sealed_by_the_card(tmp_path):
    """build_package(extra_files=[predictions.csv]), as the package stage calls it: the file is
    in the package and in the card's sha256 list, so a changed prediction is caught."""
    from skindx.export.package import build_package
    from skindx.inference import PreprocessingContract
    from skindx.inference.model import ModelIntegrityError
    from tests.conftest import make_untrained_model

    source = write_predictions(
        tmp_path / "plots" / PREDICTIONS_FILE,
        image_ids=IMAGE_IDS,
        lesion_ids=LESIONS,
        labels=LABELS,
        probs=np.eye(len(CLASSES))[WEAK],
        classes=CLASSES,
    )
    pkg = build_package(
        make_untrained_model(),
        PreprocessingContract(input_size=32),
        tmp_path / "candidate",
        metrics=metrics_of(WEAK),
        extra_files=[source],
        version="x",
    )
    card = verify_package(pkg)
    assert (pkg / PREDICTIONS_FILE).read_bytes() == source.read_bytes()
    assert PREDICTIONS_FILE in card["files"]
    text = (pkg / PREDICTIONS_FILE).read_text().replace(",0,", ",1,", 1)
    (pkg / PREDICTIONS_FILE).write_text(text)
    with pytest.raises(ModelIntegrityError, match=PREDICTIONS_FILE):
        verify_package(pkg)
