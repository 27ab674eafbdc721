"""The training recipe options of issue 13 (train.augment.*, train.mix, train.ema,
train.progressive, train.amp): behavioural tests on real 32 px images, each option alone.
Every option is off by default; off, it changes nothing (the default recipe's results stay)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skindx.config import compose_config
from skindx.data.processed import load_split
from skindx.models.checkpoint import cpu_state_copy, load_checkpoint, load_model_from_checkpoint
from skindx.training.augment import (
    PHOTOMETRIC_OPS,
    AugmentConfig,
    BatchTransform,
    MixConfig,
    _apply_op,
    mix_batch,
)
from skindx.training.ema import ModelEma
from skindx.training.loop import ProgressiveConfig, TrainConfig, Trainer, soft_cross_entropy
from skindx.training.precision import cpu_bf16_support, normalize_amp, resolve_precision
from tests.helpers.training import CONTRACT, make_trainer

from .test_training_data import NO_AUGMENT

REPO_CONF = Path(__file__).resolve().parents[2] / "conf"
MEAN = torch.tensor(CONTRACT.mean).view(1, 3, 1, 1)
STD = torch.tensor(CONTRACT.std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def batch(processed_dir) -> torch.Tensor:
    return torch.from_numpy(np.array(load_split(processed_dir, "train").images[:12]))


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the defaults change nothing ------------------------------------------------------------
def test_conf_defaults_are_the_previous_recipe():
    """conf/train/default.yaml's new keys are all off: the same TrainConfig as the recipe
    before them (dataclass defaults), so the demo profile's results do not move."""
    train = compose_config(["experiment=demo"], conf_dir=REPO_CONF)["train"]
    config = TrainConfig.from_params(train)
    assert config.augment == AugmentConfig()
    assert config.mix == MixConfig() and not config.mix.enabled
    assert not config.ema.enabled
    assert config.progressive.size(1, 64) is None
    assert config.amp == "cuda"
    assert resolve_precision(config.amp, torch.device("cpu")).name == "fp32"


def test_options_off_draw_no_random_numbers(batch):
    """Off options consume nothing from the augmentation stream: the default transform's
    output and the generator's state after it are those of the options' absence."""
    default = BatchTransform(CONTRACT, AugmentConfig())
    explicit = BatchTransform(
        CONTRACT,
        AugmentConfig(rotate_degrees=0.0, trivial_augment=False, random_erasing=0.0),
    )
    g1, g2 = _gen(3), _gen(3)
    assert torch.equal(
        default(batch, train=True, generator=g1), explicit(batch, train=True, generator=g2)
    )
    x = torch.randn(4, 3, 8, 8)
    mixed, soft = mix_batch(x, torch.arange(4), 7, MixConfig(), g1)
    assert mixed is x and soft is None
    assert torch.equal(g1.get_state(), g2.get_state())


def test_all_off_is_the_identity_in_train_mode(batch):
    out = BatchTransform(CONTRACT, NO_AUGMENT)(batch, train=True, generator=_gen())
    assert torch.equal(out, BatchTransform(CONTRACT, NO_AUGMENT)(batch, train=False))


# -- photometric (TrivialAugment), erasing, rotation ----------------------------------------
STRONG = AugmentConfig(
    rotate_degrees=180.0, trivial_augment=True, photometric_magnitude=1.0, random_erasing=0.5
)


def test_strong_augmentation_is_deterministic_given_the_seed_and_stays_in_range(batch):
    transform = BatchTransform(CONTRACT, AugmentConfig(rotate_degrees=180.0, trivial_augment=True))
    a = transform(batch, train=True, generator=_gen(5))
    b = transform(batch, train=True, generator=_gen(5))
    c = transform(batch, train=True, generator=_gen(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    pixels = _pixels(a)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.isfinite(
        BatchTransform(CONTRACT, STRONG)(batch, train=True, generator=_gen(5))
    ).all()


@pytest.mark.parametrize("op", [op for op in PHOTOMETRIC_OPS if op != "identity"])
def test_each_photometric_op_is_the_identity_at_zero_strength_and_acts_at_full(batch, op):
    x = batch.permute(0, 3, 1, 2).float() / 255
    n = x.shape[0]
    sign, cast = torch.ones(n), torch.ones(n, 3)
    zero = _apply_op(op, x, torch.zeros(n), sign, cast)
    torch.testing.assert_close(zero, x, atol=1e-4, rtol=0)
    full = _apply_op(op, x, torch.full((n,), PHOTOMETRIC_OPS[op]), sign, cast)
    assert (full - x).abs().mean() > 1e-3, f"{op} at full strength left the images unchanged"


def test_hue_rotation_keeps_luma_and_no_op_inverts(batch):
    x = batch.permute(0, 3, 1, 2).float() / 255
    n = x.shape[0]
    out = _apply_op("hue", x, torch.full((n,), 0.05), torch.ones(n), torch.ones(n, 3))
    luma = torch.tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)
    torch.testing.assert_close((out * luma).sum(1), (x * luma).sum(1), atol=1e-4, rtol=0)
    # dermoscopy-safe: every op keeps brightness order (no inversion): correlation stays > 0
    for op, strength in PHOTOMETRIC_OPS.items():
        if op == "identity":
            continue
        y = _apply_op(op, x, torch.full((n,), strength), -torch.ones(n), torch.ones(n, 3))
        corr = np.corrcoef(x.flatten().numpy(), y.clamp(0, 1).flatten().numpy())[0, 1]
        assert corr > 0.8, op


def test_unknown_photometric_op_is_rejected():
    with pytest.raises(ValueError, match="photometric_ops"):
        AugmentConfig.from_params({"photometric_ops": ["invert"]})


def test_random_erasing_replaces_one_rectangle(batch):
    plain = BatchTransform(CONTRACT, NO_AUGMENT)(batch, train=False)
    erase = AugmentConfig(
        hflip=False,
        vflip=False,
        rot90=False,
        random_resized_crop_scale=None,
        color_jitter=0.0,
        random_erasing=1.0,
        erasing_area=(0.1, 0.2),
    )
    out = BatchTransform(CONTRACT, erase)(batch, train=True, generator=_gen(1))
    for i in range(len(batch)):
        changed = (out[i] != plain[i]).any(0)
        rows, cols = changed.nonzero(as_tuple=True)
        assert len(rows) > 0
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == changed.sum()  # one full rectangle
        assert 0.05 <= float(changed.float().mean()) <= 0.3


# -- progressive resizing ---------------------------------------------------------------------
def test_progressive_schedule_and_downsampling(batch):
    cfg = ProgressiveConfig(start_size=16, epochs_at_start=2)
    assert [cfg.size(e, 32) for e in (1, 2, 3)] == [16, 16, None]
    assert ProgressiveConfig().size(1, 32) is None
    assert ProgressiveConfig(start_size=48, epochs_at_start=2).size(1, 32) is None
    transform = BatchTransform(CONTRACT, NO_AUGMENT)
    small = transform(batch, train=True, generator=_gen(), size=16)
    assert small.shape == (12, 3, 16, 16)
    full = transform(batch, train=False)
    # an antialiased downsampling: the per-image mean colour is kept
    torch.testing.assert_close(small.mean((2, 3)), full.mean((2, 3)), atol=0.05, rtol=0)


# -- mixup / cutmix and the loss --------------------------------------------------------------
def test_mixup_preserves_label_mass_and_mixes_images_with_the_same_weight():
    x = torch.rand(8, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])
    mixed, soft = mix_batch(x, labels, 7, MixConfig(mixup_alpha=0.4), _gen(2))
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    # the batch's label mass per class is conserved (each image gives lam to itself and
    # 1 - lam to its partner, and every image is someone's partner once)
    torch.testing.assert_close(soft.sum(0), F.one_hot(labels, 7).float().sum(0))
    lam = float(soft[1, labels[1]])  # image 1 (class 1) is mixed with image 6 (class 6)
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(mixed, x * lam + x.flip(0) * (1 - lam))
    again, soft2 = mix_batch(x, labels, 7, MixConfig(mixup_alpha=0.4), _gen(2))
    assert torch.equal(again, mixed) and torch.equal(soft2, soft)


def test_cutmix_target_weight_is_the_pasted_area():
    n = 6
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 20, 20).clone()
    labels = torch.arange(n)
    for seed in range(5):
        mixed, soft = mix_batch(x, labels, n, MixConfig(cutmix_alpha=1.0), _gen(seed))
        for i in range(n):
            partner = n - 1 - i
            from_partner = float((mixed[i, 0] == partner).float().mean())
            assert soft[i, partner] == pytest.approx(from_partner, abs=1e-6)
        torch.testing.assert_close(soft.sum(1), torch.ones(n))


def test_soft_cross_entropy_of_hard_labels_is_torchs_weighted_loss():
    torch.manual_seed(0)
    logits = torch.randn(10, 7)
    labels = torch.randint(0, 7, (10,))
    weight = torch.rand(7) + 0.5
    for smoothing in (0.0, 0.1):
        summed, total = soft_cross_entropy(logits, F.one_hot(labels, 7).float(), weight, smoothing)
        expected = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)
        torch.testing.assert_close(summed / total, expected)


def test_mixed_target_counts_with_its_classes_mixed_weight():
    logits = torch.zeros(1, 3)  # uniform prediction: -log p = log 3 for every class
    weight = torch.tensor([1.0, 3.0, 1.0])
    soft = torch.tensor([[0.25, 0.75, 0.0]])
    summed, total = soft_cross_entropy(logits, soft, weight)
    assert float(total) == pytest.approx(0.25 * 1 + 0.75 * 3)
    assert float(summed / total) == pytest.approx(np.log(3))


# -- EMA ------------------------------------------------------------------------------------
def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2))


def test_ema_of_a_constant_model_equals_it():
    net = _small_net()
    net(torch.randn(2, 3, 6, 6))
    ema = ModelEma(net, decay=0.9)
    for _ in range(5):
        ema.update(net)
    for key, value in net.state_dict().items():
        assert torch.equal(ema.module.state_dict()[key], value), key


def test_ema_averages_weights_and_batchnorm_buffers():
    net = _small_net()
    net(torch.randn(2, 3, 6, 6))
    ema = ModelEma(net, decay=0.5, warmup=False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    net(torch.randn(4, 3, 6, 6) + 3)  # moves the BN running statistics
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    after = net.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.5 * before[key] + 0.5 * after[key])
        else:  # num_batches_tracked follows the model
            assert torch.equal(value, after[key])
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_ema_warmup_forgets_the_start():
    ema = ModelEma(_small_net(), decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.updates = 10_000
    assert ema.current_decay() == pytest.approx(0.999)


class EmaWins(Trainer):
    """Real training and validation; the EMA's score is scripted to beat the model's."""

    def validate_ema(self):
        metrics = super().validate_ema()
        self.calls = getattr(self, "calls", 0) + 1
        metrics["val_ema_balanced_accuracy"] = 2.0 + self.calls  # above any real score, rising
        return metrics


class EmaLoses(Trainer):
    def validate_ema(self):
        metrics = super().validate_ema()
        metrics["val_ema_balanced_accuracy"] = -1.0
        return metrics


@pytest.mark.slow  # ONNX export; about 15 s here
def test_best_checkpoint_and_export_hold_the_ema_when_it_validates_better(processed_dir, tmp_path):
    import onnxruntime as ort

    from skindx.export.onnx import export_onnx
    from skindx.inference.preprocessing import normalize

    snapshots = {}

    def snapshot(row, trainer):
        snapshots[row["epoch"]] = (
            cpu_state_copy(trainer.ema.module),
            cpu_state_copy(trainer.model),
        )

    trainer = make_trainer(
        processed_dir,
        tmp_path,
        cls=EmaWins,
        callbacks=[snapshot],
        epochs=2,
        max_steps_per_epoch=2,
        ema={"enabled": True, "decay": 0.9},
    )
    result = trainer.fit()
    assert result.best_weights == "ema"
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["weights"] == "ema" and best["best_weights"] == "ema"
    ema_state, model_state = snapshots[best["best_epoch"]]
    assert all(torch.equal(best["model_state"][k], v) for k, v in ema_state.items())
    assert not all(torch.equal(best["model_state"][k], v) for k, v in model_state.items())
    assert "val_ema_balanced_accuracy" in best["history"][0]
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["weights"] == "model" and "ema_state" in last
    # evaluate and package load best.pt's model_state: the exported ONNX is the EMA model
    model, _ = load_model_from_checkpoint(tmp_path / "best.pt")
    onnx_path = export_onnx(model, tmp_path / "model.onnx", CONTRACT.input_size)
    images = np.array(load_split(processed_dir, "val").images[:4])
    x = normalize(images, CONTRACT)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    reference = trainer.ema.module  # the EMA at the last epoch = at the best (epoch 2)
    assert best["best_epoch"] == 2
    with torch.no_grad():
        torch_logits = reference.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_logits[: len(x), :7], torch_logits, atol=1e-3)


@pytest.mark.slow
def test_best_checkpoint_holds_the_model_when_the_ema_validates_worse(processed_dir, tmp_path):
    trainer = make_trainer(
        processed_dir, tmp_path, cls=EmaLoses, epochs=1, ema={"enabled": True, "decay": 0.9}
    )
    result = trainer.fit()
    best = load_checkpoint(tmp_path / "best.pt")
    assert result.best_weights == "model" and best["weights"] == "model"
    assert "ema_state" not in best  # best.pt stays one model's size
    assert all(
        torch.equal(best["model_state"][k], v) for k, v in cpu_state_copy(trainer.model).items()
    )


@pytest.mark.slow
def test_resume_restores_the_ema(processed_dir, tmp_path):
    trainer = make_trainer(processed_dir, tmp_path, epochs=2, ema={"enabled": True, "decay": 0.9})
    trainer.fit()
    saved = load_checkpoint(tmp_path / "last.pt")["ema_state"]
    resumed = make_trainer(processed_dir, tmp_path, epochs=2, ema={"enabled": True, "decay": 0.9})
    resumed.fit(resume=True)  # nothing left to train: restores and stops
    assert resumed.ema.updates == saved["updates"] == 2
    for key, value in saved["state"].items():
        assert torch.equal(resumed.ema.module.state_dict()[key], value)


# -- the whole recipe trains ----------------------------------------------------------------
@pytest.mark.slow
def test_every_option_on_trains_with_a_finite_loss(processed_dir, tmp_path):
    trainer = make_trainer(
        processed_dir,
        tmp_path,
        epochs=2,
        max_steps_per_epoch=2,
        amp="on",
        augment={"rotate_degrees": 90, "trivial_augment": True, "random_erasing": 0.5},
        mix={"mixup_alpha": 0.2, "cutmix_alpha": 1.0},
        ema={"enabled": True},
        progressive={"start_size": 16, "epochs_at_start": 1},
        label_smoothing=0.1,
    )
    assert trainer.precision.name == "bf16-autocast"
    result = trainer.fit()
    assert all(np.isfinite(row["train_loss"]) for row in result.history)
    assert result.history[-1]["val_ema_balanced_accuracy"] >= 0


# -- train.amp ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "amp", "name"),
    [
        ("fpu avx2 fma", "auto", "fp32"),
        ("fpu avx2 avx512f amx_bf16 amx_tile", "auto", "bf16-autocast"),
        ("fpu avx512f avx512_bf16", "auto", "bf16-autocast"),
        ("fpu avx2", "on", "bf16-autocast"),
        ("fpu avx512_bf16", "cuda", "fp32"),
        ("fpu avx512_bf16", "off", "fp32"),
        ("fpu avx512_bf16", True, "fp32"),
    ],
)
def test_amp_on_cpu_follows_the_cpu_flags(tmp_path, flags, amp, name):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    precision = resolve_precision(amp, torch.device("cpu"), cpuinfo=cpuinfo)
    assert precision.name == name, precision.reason
    assert precision.dtype == (torch.bfloat16 if name != "fp32" else torch.float32)


def test_amp_settings():
    assert normalize_amp(True) == "cuda" and normalize_amp(False) == "off"
    with pytest.raises(ValueError, match="train.amp"):
        TrainConfig.from_params({"amp": "fast"})
    assert cpu_bf16_support("/nonexistent/cpuinfo") is None
    # an older checkpoint's `amp: true` is today's `cuda`: resuming it is not a schedule change
    assert (
        TrainConfig.from_params({"amp": True}).schedule_settings()
        == TrainConfig().schedule_settings()
    )
