"""Behavioural tests of the torch evaluation path (Made-With-ML style) on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skindx.data.processed import load_split
from skindx.evaluation.metrics import balanced_accuracy
from skindx.inference import PreprocessingContract, normalize
from skindx.models import build_model
from skindx.models.predict import predict_logits

CONTRACT = PreprocessingContract(input_size=32)


@pytest.fixture(scope="module")
def images_labels(processed_dir):
    splits = [load_split(processed_dir, s) for s in ("train", "val", "test")]
    return (
        np.concatenate([np.asarray(s.images) for s in splits]),
        np.concatenate([s.labels for s in splits]),
    )


@pytest.fixture(scope="module")
def model(images_labels):
    """An untrained resnet18 whose BatchNorm running statistics are not the defaults, so that
    any use of batch statistics at evaluation would show."""
    torch.manual_seed(0)
    net = build_model("resnet18")
    net.train()
    with torch.no_grad():
        for start in range(0, 64, 16):
            net(torch.from_numpy(normalize(images_labels[0][start : start + 16], CONTRACT)))
    return net.eval()


def test_logits_are_the_models_output_on_the_contract_input(model, images_labels):
    images = images_labels[0][:10]
    with torch.no_grad():
        direct = model(torch.from_numpy(normalize(images, CONTRACT))).numpy()
    np.testing.assert_allclose(
        predict_logits(model, images, CONTRACT, batch_size=4), direct, atol=1e-5
    )


def test_predictions_do_not_depend_on_batch_composition(model, images_labels):
    images = images_labels[0][:24]
    alone = np.concatenate(
        [predict_logits(model, images[i : i + 1], CONTRACT, 1) for i in range(len(images))]
    )
    batched = predict_logits(model, images, CONTRACT, batch_size=24)
    order = np.random.default_rng(0).permutation(len(images))
    shuffled = predict_logits(model, images[order], CONTRACT, batch_size=7)
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    np.testing.assert_allclose(shuffled, batched[order], atol=1e-4)
    # another image's presence in the batch changes nothing
    mixed = predict_logits(model, np.concatenate([images[:1], images_labels[0][-5:]]), CONTRACT, 6)
    np.testing.assert_allclose(mixed[0], batched[0], atol=1e-4)


def test_mode_is_restored_and_bad_input_refused(model, images_labels):
    model.train()
    predict_logits(model, images_labels[0][:2], CONTRACT)
    assert model.training
    model.eval()
    with pytest.raises(ValueError, match="uint8"):
        predict_logits(model, images_labels[0][:2].astype(np.float32), CONTRACT)


def test_untrained_model_scores_near_chance(images_labels):
    images, labels = images_labels  # 98 real images, 14 per class: chance is 1/7
    scores = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = build_model("resnet18").eval()
        pred = predict_logits(net, images, CONTRACT, 64).argmax(axis=1)
        scores.append(balanced_accuracy(labels, pred, 7))
    assert np.mean(scores) < 0.3, scores
