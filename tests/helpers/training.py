"""A real Trainer on a small processed dir (resnet18 at 32 px, one step per epoch), for the
training-loop and GPU tests (moved from tests/training/test_training_loop.py)."""

from __future__ import annotations

from skindx.data.processed import load_class_weights, load_split
from skindx.inference import PreprocessingContract
from skindx.models import build_model
from skindx.runtime import seed_everything
from skindx.training.loop import TrainConfig, Trainer

CONTRACT = PreprocessingContract(input_size=32)
MODEL = {"arch": "resnet18", "num_classes": 7, "dropout": 0.2, "weights": "none"}


def make_trainer(processed_dir, out_dir, *, cls=Trainer, callbacks=(), model=MODEL, **train):
    config = TrainConfig.from_params({"batch_size": 16, "max_steps_per_epoch": 1, **train}, seed=7)
    seed_everything(config.seed)
    _, weights = load_class_weights(processed_dir)
    return cls(
        build_model(**model),
        load_split(processed_dir, "train"),
        load_split(processed_dir, "val"),
        CONTRACT,
        config,
        class_weights=weights,
        out_dir=out_dir,
        run_config={"model": dict(model)},
        callbacks=callbacks,
        progress=False,
    )
