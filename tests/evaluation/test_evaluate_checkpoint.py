"""evaluate_checkpoint against an independent computation on the same checkpoint and split."""

from __future__ import annotations

import numpy as np
import pytest

from skindx.data.processed import load_class_weights, load_split, read_contract
from skindx.evaluation.calibration import fit_temperature
from skindx.evaluation.metrics import classification_report, softmax
from skindx.evaluation.selective import choose_threshold
from skindx.evaluation.stage import evaluate_checkpoint
from skindx.models.checkpoint import cpu_state_copy, save_checkpoint
from skindx.models.predict import predict_logits
from tests.helpers.training import MODEL, make_trainer


@pytest.fixture(scope="module")
def trained(processed_dir, tmp_path_factory):
    """(model, contract, classes, best.pt path) after a few real training steps: an untrained
    model can predict one class for every image (it does on the synthetic set), and then no
    temperature tells val from test."""
    tmp = tmp_path_factory.mktemp("evaluate")
    trainer = make_trainer(processed_dir, tmp / "train", epochs=2, max_steps_per_epoch=3)
    trainer.fit()
    model = trainer.model.eval()  # the same build_model config as MODEL
    contract = read_contract(processed_dir)
    classes, _ = load_class_weights(processed_dir)
    path = save_checkpoint(
        tmp / "best.pt",
        {
            "model_state": cpu_state_copy(model),
            "epoch": 1,
            "best_epoch": 1,
            "config": {"model": MODEL, "classes": classes, "contract": contract.to_dict()},
        },
    )
    return model, contract, classes, path


@pytest.mark.slow
def test_metrics_and_temperature_match_an_independent_computation(processed_dir, trained):
    model, contract, classes, path = trained

    result = evaluate_checkpoint(path, processed_dir)

    val, test = load_split(processed_dir, "val"), load_split(processed_dir, "test")
    test_logits = predict_logits(model, test.images, contract)
    report = classification_report(test.labels, softmax(test_logits), classes)
    metrics = result["metrics"]
    assert metrics["n_test"] == len(test.labels) > 0
    for key in ("balanced_accuracy", "macro_f1", "accuracy"):
        assert metrics[key] == pytest.approx(report[key], abs=1e-9), key
    np.testing.assert_allclose(result["probs"], softmax(test_logits), atol=1e-5)

    val_temperature = fit_temperature(predict_logits(model, val.images, contract), val.labels)
    test_temperature = fit_temperature(test_logits, test.labels)
    assert metrics["temperature"] == pytest.approx(val_temperature, rel=1e-4)
    assert test_temperature != pytest.approx(val_temperature, rel=1e-2)  # fitted on val, not test


@pytest.mark.slow
def test_tta_section_is_the_mean_of_the_eight_calibrated_views(processed_dir, trained):
    """evaluate.tta: metrics["tta"] against the views built here with torch (not with
    skindx.inference.tta), and its paired difference against the plain pass's metric."""
    import torch

    model, contract, classes, path = trained
    plain = evaluate_checkpoint(path, processed_dir)
    assert "tta" not in plain["metrics"]  # off by default: 8x the test inference

    result = evaluate_checkpoint(path, processed_dir, tta=True)

    test = load_split(processed_dir, "test")
    images = torch.from_numpy(np.array(test.images))  # N, H, W, C (a writable copy)
    views = [
        torch.rot90(base, k, dims=(1, 2))
        for base in (images, torch.flip(images, dims=(2,)))
        for k in range(4)
    ]
    temperature = result["metrics"]["temperature"]
    expected = np.mean(
        [
            softmax(predict_logits(model, np.ascontiguousarray(v.numpy()), contract), temperature)
            for v in views
        ],
        axis=0,
    )
    tta = result["metrics"]["tta"]
    report = classification_report(test.labels, expected, classes)
    assert tta["views"] == 8
    for key in ("balanced_accuracy", "macro_f1", "accuracy", "melanoma_sensitivity"):
        assert tta[key] == pytest.approx(report[key], abs=1e-9), key
    assert tta["difference"]["delta"] == pytest.approx(
        tta["balanced_accuracy"] - result["metrics"]["balanced_accuracy"], abs=1e-9
    )
    assert tta["difference"]["n_images"] == len(test.labels)
    assert tta["difference"]["metric"] == "balanced_accuracy"
    # the headline numbers are the plain pass's, with or without TTA
    assert result["metrics"]["balanced_accuracy"] == plain["metrics"]["balanced_accuracy"]
    # the TTA answers' own uncertainty threshold, chosen on the validation split's views
    val = load_split(processed_dir, "val")
    val_images = torch.from_numpy(np.array(val.images))
    val_views = [
        torch.rot90(base, k, dims=(1, 2))
        for base in (val_images, torch.flip(val_images, dims=(2,)))
        for k in range(4)
    ]
    val_expected = np.mean(
        [
            softmax(predict_logits(model, np.ascontiguousarray(v.numpy()), contract), temperature)
            for v in val_views
        ],
        axis=0,
    )
    threshold, met = choose_threshold(
        val_expected.max(1), val_expected.argmax(1) == val.labels, target_accuracy=0.8
    )
    assert tta["selective"]["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert tta["selective"]["target_met"] is met
    assert tta["selective"]["chosen_on"] == "validation"
    assert plain["metrics"]["selective"] == result["metrics"]["selective"]


@pytest.mark.slow
def test_a_channels_last_trained_checkpoint_scores_in_that_format_with_the_same_answers(
    processed_dir, trained, tmp_path, monkeypatch
):
    """train.channels_last (on by default) is the format training validated in, so evaluate
    scores in it too: the answers are those of the contiguous model up to float rounding."""
    from skindx.models.checkpoint import load_checkpoint

    model, contract, _, path = trained
    checkpoint = load_checkpoint(path)
    checkpoint["config"] = {**checkpoint["config"], "train": {"channels_last": True}}
    nhwc = save_checkpoint(tmp_path / "best.pt", checkpoint)
    import skindx.evaluation.stage as stage

    formats = []

    def recording(module, images, *args, **kwargs):
        formats.append(kwargs.get("channels_last"))
        return predict_logits(module, images, *args, **kwargs)

    monkeypatch.setattr(stage, "predict_logits", recording)
    result = evaluate_checkpoint(nhwc, processed_dir)
    monkeypatch.undo()

    assert formats == [True, True]  # validation and test, in the format training used

    test = load_split(processed_dir, "test")
    expected = softmax(predict_logits(model, test.images, contract))  # contiguous
    np.testing.assert_allclose(result["probs"], expected, atol=1e-4)
    assert (result["probs"].argmax(1) == expected.argmax(1)).all()
    plain = evaluate_checkpoint(path, processed_dir)["metrics"]
    assert result["metrics"]["temperature"] == pytest.approx(plain["temperature"], rel=1e-3)
