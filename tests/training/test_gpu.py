"""The CUDA path of training and evaluation (AMP, channels_last). Skipped without a GPU:
CI has none; these run on a lent GPU machine (`pytest -m gpu`, see docs/results.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skindx.data.processed import load_split
from skindx.evaluation.metrics import softmax
from skindx.models.checkpoint import load_model_from_checkpoint
from skindx.models.predict import predict_logits
from tests.helpers.training import CONTRACT, make_trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (no GPU here)"),
]


@pytest.fixture(scope="module")
def cuda_run(processed_dir, tmp_path_factory):
    trainer = make_trainer(
        processed_dir,
        tmp_path_factory.mktemp("gpu_train"),
        epochs=2,
        max_steps_per_epoch=None,
        device="cuda",
        amp=True,
        channels_last=True,
    )
    return trainer, trainer.fit()


def test_training_on_cuda_uses_amp_and_channels_last_and_learns(cuda_run):
    trainer, result = cuda_run
    assert trainer.device.type == "cuda" and trainer.use_amp
    assert next(trainer.model.parameters()).is_cuda
    conv = trainer.model.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_a_cuda_checkpoint_loads_on_cpu_and_predicts_like_the_gpu(cuda_run, processed_dir):
    trainer, result = cuda_run
    cpu_model, _ = load_model_from_checkpoint(result.best_path)
    assert next(cpu_model.parameters()).device.type == "cpu"
    images = load_split(processed_dir, "test").images
    gpu_model = load_model_from_checkpoint(result.best_path)[0].cuda()
    cpu_logits = predict_logits(cpu_model, images, CONTRACT, device="cpu")
    gpu_logits = predict_logits(gpu_model, images, CONTRACT, device="cuda", channels_last=True)
    # TF32 convolutions on the GPU: close, not bit-equal
    assert np.abs(softmax(cpu_logits) - softmax(gpu_logits)).max() < 1e-2
