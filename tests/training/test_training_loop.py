"""The training loop: best-epoch selection, checkpoints, resume, determinism, early stopping,
schedules. resnet18 at 32 px on real images, one or two steps per epoch."""

from __future__ import annotations

import csv
import math
import pickle
from dataclasses import dataclass

import pytest
import torch

from skindx.models.checkpoint import cpu_state_copy, load_checkpoint, load_model_from_checkpoint
from skindx.training.loop import TrainConfig, Trainer, make_scheduler, write_history
from tests.helpers.training import MODEL, make_trainer


class ScriptedValidation(Trainer):
    """Real training; the validation score follows a script so that the best epoch is known."""

    script = (0.2, 0.6, 0.4)

    def validate(self):
        metrics = super().validate()
        metrics["val_balanced_accuracy"] = self.script[len(self._seen)]
        self._seen.append(metrics)
        return metrics

    @property
    def _seen(self):
        if not hasattr(self, "_seen_list"):
            self._seen_list = []
        return self._seen_list


@pytest.mark.slow  # over 8 s here: a whole stage, MLflow store or several epochs
def test_best_checkpoint_holds_the_best_epoch_not_the_last(processed_dir, tmp_path):
    snapshots = {}

    def snapshot(row, trainer):
        snapshots[row["epoch"]] = cpu_state_copy(trainer.model)

    trainer = make_trainer(
        processed_dir, tmp_path, cls=ScriptedValidation, callbacks=[snapshot], epochs=3
    )
    result = trainer.fit()
    assert result.best_epoch == 2 and result.best_metric == pytest.approx(0.6)
    best = load_checkpoint(tmp_path / "best.pt")
    last = load_checkpoint(tmp_path / "last.pt")
    assert best["best_epoch"] == 2 and best["epoch"] == 2 and last["epoch"] == 3

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(best["model_state"], snapshots[2])
    assert not same(best["model_state"], snapshots[3])  # training did move the weights
    assert same(last["model_state"], snapshots[3])
    # the returned model holds the best weights, not the last ones
    assert same(cpu_state_copy(trainer.model), snapshots[2])


@pytest.mark.slow  # over 8 s here: a whole stage, MLflow store or several epochs
def test_checkpoint_contract(processed_dir, tmp_path):
    make_trainer(processed_dir, tmp_path, epochs=1).fit()
    checkpoint = load_checkpoint(tmp_path / "best.pt")  # weights_only=True inside
    for key in (
        "model_state",
        "optimizer_state",
        "scheduler_state",
        "epoch",
        "best_metric",
        "best_epoch",
        "history",
        "config",
    ):
        assert key in checkpoint
    model, _ = load_model_from_checkpoint(tmp_path / "best.pt")
    assert not model.training and model.fc[1].out_features == 7
    assert set(checkpoint["history"][0]) >= {
        "epoch",
        "train_loss",
        "val_loss",
        "val_balanced_accuracy",
        "val_macro_f1",
        "lr",
    }


@dataclass
class NotATensor:
    value: int = 1


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "config": NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(path)


class Interrupt(Exception):
    pass


def _stop_after_first_epoch(row, trainer):
    if row["epoch"] == 1:
        raise Interrupt


@pytest.fixture(scope="module")
def uninterrupted(processed_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = make_trainer(processed_dir, out, epochs=2).fit()
    return result, load_checkpoint(out / "last.pt")


@pytest.mark.slow
def test_resume_after_an_interruption_matches_an_uninterrupted_run(
    processed_dir, tmp_path, uninterrupted
):
    with pytest.raises(Interrupt):
        make_trainer(processed_dir, tmp_path, epochs=2, callbacks=[_stop_after_first_epoch]).fit()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1

    resumed = make_trainer(processed_dir, tmp_path, epochs=2).fit(resume=True)
    assert resumed.epochs_run == 2 and [r["epoch"] for r in resumed.history] == [1, 2]

    expected, expected_last = uninterrupted
    assert resumed.history[1]["train_loss"] == pytest.approx(
        expected.history[1]["train_loss"], abs=1e-6
    )
    assert resumed.history[1]["val_loss"] == pytest.approx(
        expected.history[1]["val_loss"], abs=1e-6
    )
    last = load_checkpoint(tmp_path / "last.pt")
    for key, value in expected_last["model_state"].items():
        torch.testing.assert_close(last["model_state"][key], value, atol=1e-6, rtol=0, msg=key)


@pytest.mark.slow
def test_same_config_same_metrics_on_cpu(processed_dir, tmp_path, uninterrupted):
    again = make_trainer(processed_dir, tmp_path, epochs=2).fit()
    expected, _ = uninterrupted
    for mine, theirs in zip(again.history, expected.history, strict=True):
        for key in (
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_balanced_accuracy",
            "val_macro_f1",
        ):
            assert mine[key] == theirs[key], key


@pytest.mark.slow
def test_validate_from_skips_early_epochs_and_leaves_training_alone(
    processed_dir, tmp_path, uninterrupted
):
    """train.validate_from=2: epoch 1 is trained but neither validated nor a best.pt candidate;
    the weights and epoch 2's validation are those of validating every epoch; history.csv
    leaves epoch 1's validation cells blank (a gap in the DVC plot, not a zero)."""
    result = make_trainer(processed_dir, tmp_path, epochs=2, validate_from=2).fit()
    first, second = result.history
    assert "val_loss" not in first and "val_balanced_accuracy" not in first
    assert result.best_epoch == 2
    expected, expected_last = uninterrupted
    for key in ("train_loss", "val_loss", "val_balanced_accuracy", "val_macro_f1"):
        assert second[key] == expected.history[1][key], key
    last = load_checkpoint(tmp_path / "last.pt")["model_state"]
    assert all(torch.equal(last[k], v) for k, v in expected_last["model_state"].items())

    rows = list(csv.DictReader(write_history(tmp_path / "history.csv", result.history).open()))
    assert rows[0]["val_balanced_accuracy"] == "" and rows[0]["train_loss"] != ""
    assert float(rows[1]["val_balanced_accuracy"]) == pytest.approx(second["val_balanced_accuracy"])


@pytest.mark.slow
def test_validate_from_past_the_end_still_validates_the_last_epoch(processed_dir, tmp_path):
    result = make_trainer(processed_dir, tmp_path, epochs=2, validate_from=5).fit()
    assert result.best_epoch == 2 and "val_loss" in result.history[-1]
    assert load_checkpoint(tmp_path / "best.pt")["best_epoch"] == 2


@pytest.mark.slow
def test_early_stopping_counts_only_validated_epochs(processed_dir, tmp_path):
    """Epochs before train.validate_from are no evidence: patience 2 from a best at epoch 3
    stops after epoch 5, not after epoch 3."""
    result = make_trainer(
        processed_dir,
        tmp_path,
        cls=NeverImproves,
        epochs=8,
        early_stopping_patience=2,
        validate_from=3,
    ).fit()
    assert result.stopped_early and result.best_epoch == 3 and result.epochs_run == 5


@pytest.mark.slow
def test_resume_refuses_another_model(processed_dir, tmp_path):
    make_trainer(processed_dir, tmp_path, epochs=1).fit()
    other = {**MODEL, "dropout": 0.5}
    with pytest.raises(ValueError, match="cannot resume"):
        make_trainer(processed_dir, tmp_path, epochs=2, model=other).fit(resume=True)


@pytest.mark.slow
def test_resume_refuses_a_changed_schedule(processed_dir, tmp_path):
    make_trainer(processed_dir, tmp_path, epochs=1).fit()
    # OneCycleLR would otherwise fail mid-run ("Tried to step N times") with a new total
    with pytest.raises(ValueError, match=r"cannot resume .*train\.epochs: 1 -> 2.*last\.pt"):
        make_trainer(processed_dir, tmp_path, epochs=2).fit(resume=True)
    # where and how fast it runs may change
    resumed = make_trainer(processed_dir, tmp_path, epochs=1, num_workers=0, channels_last=False)
    assert resumed.fit(resume=True).epochs_run == 1


class NeverImproves(Trainer):
    def validate(self):
        return {**super().validate(), "val_balanced_accuracy": 0.5}


@pytest.mark.slow  # over 8 s here: a whole stage, MLflow store or several epochs
def test_early_stopping(processed_dir, tmp_path):
    def trainer():
        return make_trainer(
            processed_dir,
            tmp_path,
            cls=NeverImproves,
            epochs=6,
            early_stopping_patience=2,
            max_steps_per_epoch=1,
        )

    result = trainer().fit()
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    # resuming a finished run does not train again
    resumed = trainer().fit(resume=True)
    assert resumed.epochs_run == 3


@pytest.mark.parametrize("imbalance", ["sampler", "none"])
def test_other_imbalance_strategies_train(processed_dir, tmp_path, imbalance):
    result = make_trainer(
        processed_dir, tmp_path, epochs=1, imbalance=imbalance, max_steps_per_epoch=1
    ).fit()
    assert math.isfinite(result.history[0]["train_loss"])


@pytest.mark.parametrize("name", ["onecycle", "cosine"])
def test_schedules_warm_up_then_decay(name):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    config = TrainConfig(scheduler=name, lr=1e-3, warmup_pct=0.2)
    scheduler = make_scheduler(optimizer, config, total_steps=50)
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = max(range(50), key=lrs.__getitem__)
    assert 5 <= peak <= 15 and lrs[peak] == pytest.approx(1e-3, rel=0.05)
    assert lrs[0] < lrs[peak] / 5 and lrs[-1] < lrs[peak] / 50


def test_train_config_rejects_typos():
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_params({"epoch": 3})
    with pytest.raises(ValueError, match="scheduler"):
        TrainConfig.from_params({"scheduler": "step"})
    with pytest.raises(ValueError, match="validate_from must be an epoch >= 1"):
        TrainConfig.from_params({"validate_from": 0})
