"""The training loop: AdamW + one-cycle or warmup-cosine schedule (stepped per batch), early
stopping on validation balanced accuracy (every epoch from train.validate_from on), a
checkpoint every epoch (last.pt) and at every improvement (best.pt), resumable from last.pt.

Reproducibility: every epoch reseeds torch, the sampler and the augmentation generators from
(seed, epoch), so an uninterrupted run and a run resumed from last.pt draw the same numbers;
on CPU the same config gives the same weights and metrics.
Data parallel (skindx.training.distributed, under torchrun): `train.batch_size` is the global
batch; each rank trains on its shard of every global batch, DDP averages the gradients, and the
loss is normalised by the whole global batch's weight so the step equals the single-process one.
Rank 0 alone validates, writes checkpoints, calls the callbacks (MLflow) and decides early
stopping; it broadcasts its state after each epoch so every rank stops together.
Speed: CUDA uses AMP (bf16 where supported, else fp16 with a gradient scaler) and
channels_last; CPU uses channels_last and one thread per available core, and bf16 autocast
where train.amp allows it and the CPU has AMX or AVX512-BF16 (skindx.training.precision).

Recipe options, all off by default (conf/train/default.yaml; docs/results.md, the ablation):
  - train.augment.* beyond flips/crop/jitter and train.mix.* (mixup/cutmix with soft targets;
    the loss stays the class-weighted mean, see `soft_cross_entropy`);
  - train.ema: an exponential moving average of the weights (skindx.training.ema), validated
    beside the trained weights at every validated epoch; an epoch scores the better of the
    two, and best.pt holds the better one as its `model_state` (its `weights` key says which:
    "model" or "ema"), so evaluate, package and serving use it unchanged (measured on the
    demo default: no gain, docs/results.md);
  - train.progressive: the first `epochs_at_start` epochs train at `start_size` px, the batch
    downsampled on the device; later epochs and every validation at the stored size.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from skindx.data.processed import SplitArrays
from skindx.evaluation.metrics import accuracy, balanced_accuracy, macro_f1
from skindx.inference.metrics import PRIMARY_METRIC
from skindx.inference.preprocessing import PreprocessingContract
from skindx.models.checkpoint import BEST, LAST, cpu_state_copy, load_checkpoint, save_checkpoint
from skindx.models.predict import predict_logits
from skindx.runtime import configure_runtime, seed_everything, select_device
from skindx.training.augment import AugmentConfig, BatchTransform, MixConfig, mix_batch
from skindx.training.data import check_imbalance, make_loader
from skindx.training.distributed import (
    LAUNCH_KEYS,
    SYNC_BATCHNORM,
    DistContext,
    convert_sync_batchnorm,
    per_rank_batch,
    use_sync_batchnorm,
)
from skindx.training.ema import EmaConfig, ModelEma
from skindx.training.precision import normalize_amp, resolve_precision

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "make_scheduler",
    "seed_everything",  # re-exported from skindx.runtime for bench/ and older callers
    "select_device",
    "read_history",
    "write_history",
]

log = logging.getLogger(__name__)

SCHEDULERS = ("onecycle", "cosine")
MONITOR = f"val_{PRIMARY_METRIC}"
HISTORY_FIELDS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_balanced_accuracy",
    "val_macro_f1",
    "val_accuracy",
    "lr",
    "seconds",
)
# the EMA weights' validation, in the history when train.ema is on
EMA_FIELDS = ("val_ema_loss", "val_ema_balanced_accuracy", "val_ema_macro_f1", "val_ema_accuracy")
WEIGHTS = ("model", "ema")  # best.pt["weights"]: which weights its model_state holds


@dataclass(frozen=True)
class ProgressiveConfig:
    """train.progressive: `epochs_at_start` epochs at `start_size` px first (null: off)."""

    start_size: int | None = None
    epochs_at_start: int = 0

    def __post_init__(self) -> None:
        if self.start_size is not None and self.start_size < 8:
            raise ValueError("train.progressive.start_size must be >= 8 px (or null: off)")
        if self.epochs_at_start < 0:
            raise ValueError("train.progressive.epochs_at_start must be >= 0")

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> ProgressiveConfig:
        params = dict(params or {})
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown train.progressive keys {sorted(unknown)}")
        return cls(**params)

    def size(self, epoch: int, stored: int) -> int | None:
        """The training side of `epoch` (1-based); None: the stored side."""
        if self.start_size is None or epoch > self.epochs_at_start or self.start_size >= stored:
            return None
        return int(self.start_size)


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, summed weight) of soft `targets` (N, C), rows summing to 1.

    The class-weighted mean loss is summed / weight. For one-hot targets it equals
    F.cross_entropy(weight=..., label_smoothing=...): each sample counts with the weight of its
    target (for a mixed target, the mix of its two classes' weights) and label smoothing
    spreads the target after that weight is taken, as torch does."""
    n_classes = logits.shape[1]
    w = torch.ones(n_classes, device=logits.device) if weight is None else weight
    smoothed = targets * (1.0 - label_smoothing) + label_smoothing / n_classes
    log_p = F.log_softmax(logits, dim=1)
    summed = -(smoothed * w * log_p).sum()
    return summed, (targets * w).sum().detach()


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section of params.yaml (plus the global seed)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "onecycle"
    warmup_pct: float = 0.1
    label_smoothing: float = 0.0
    imbalance: str = "weighted_loss"
    early_stopping_patience: int | None = 5
    # the first epoch validated (and so a candidate for best.pt); the last epoch always is
    validate_from: int = 1
    num_workers: int = 0
    device: str = "auto"
    amp: str | bool = "cuda"  # skindx.training.precision: auto | cuda | on | off
    channels_last: bool = True
    max_steps_per_epoch: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    # data parallel (skindx.training.distributed): ranks per machine, machines, rendezvous
    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_id: str = "skindx"
    dist_timeout_s: float = 600.0
    sync_batchnorm: str = "auto"
    seed: int = 42

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"unknown train.scheduler {self.scheduler!r}; expected one of {SCHEDULERS}"
            )
        check_imbalance(self.imbalance)
        object.__setattr__(self, "amp", normalize_amp(self.amp))
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("train.epochs must be >= 1 and train.batch_size >= 2")
        if self.validate_from < 1:
            raise ValueError(
                f"train.validate_from must be an epoch >= 1, got {self.validate_from}; "
                "1 validates every epoch"
            )
        if self.sync_batchnorm not in SYNC_BATCHNORM:
            raise ValueError(
                f"unknown train.sync_batchnorm {self.sync_batchnorm!r}; expected one of "
                f"{SYNC_BATCHNORM}"
            )

    @classmethod
    def from_params(cls, train: dict[str, Any], seed: int | None = None) -> TrainConfig:
        params = dict(train)
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown keys in the train section: {sorted(unknown)}")
        params["augment"] = AugmentConfig.from_params(params.get("augment"))
        params["mix"] = MixConfig.from_params(params.get("mix"))
        params["ema"] = EmaConfig.from_params(params.get("ema"))
        params["progressive"] = ProgressiveConfig.from_params(params.get("progressive"))
        if seed is not None:
            params["seed"] = int(seed)
        return cls(**params)

    def schedule_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint: everything but where and
        how fast it runs (and the seed, which lives outside the train section)."""
        settings = asdict(self)
        for key in RESUME_IGNORED_KEYS:
            settings.pop(key, None)
        return settings


# train keys that do not change the schedule or the optimisation: free to change on resume
# (the launch keys too: the global batch, hence the schedule, does not depend on the world size)
RESUME_IGNORED_KEYS = frozenset(
    {"device", "num_workers", "channels_last", "seed", "validate_from", *LAUNCH_KEYS}
)
# keys that older checkpoints' train sections still carry (train.out_dir is paths.train_dir now)
LEGACY_TRAIN_KEYS = frozenset({"out_dir"})


@dataclass
class TrainResult:
    best_epoch: int
    best_metric: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]]
    best_path: Path
    last_path: Path
    seconds: float
    best_weights: str = "model"  # "ema" when the EMA weights scored best_metric


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation parameters (1-d tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.scheduler == "onecycle" and total_steps >= 4:
        # OneCycleLR needs at least two warm-up steps (its phases must not be empty)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=total_steps,
            pct_start=min(max(config.warmup_pct, 2.0 / total_steps), 0.5),
        )
    warmup = int(round(config.warmup_pct * total_steps))

    def warmup_cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)


EpochCallback = Callable[[dict[str, float], "Trainer"], None]


class Trainer:
    """Trains `model` on `train_data`, selects the epoch with the best validation balanced
    accuracy, and writes best.pt / last.pt into `out_dir`.

    `out_dir` is the stage's `paths.train_dir`. `run_config` is stored as the checkpoints' `config`; it must hold the `model` section so
    the model can be rebuilt with skindx.models.build_model(**config["model"]).
    `callbacks` are called after each epoch's checkpoint with (history row, trainer).
    `dist`: this process's rank in a torchrun job (skindx.training.distributed.init_distributed);
    None for a single process. Under DDP only rank 0 writes files and calls the callbacks.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: SplitArrays,
        val_data: SplitArrays,
        contract: PreprocessingContract,
        config: TrainConfig,
        *,
        out_dir: str | Path,
        class_weights: np.ndarray | None = None,
        run_config: dict[str, Any] | None = None,
        callbacks: Sequence[EpochCallback] = (),
        progress: bool = True,
        dist: DistContext | None = None,
    ) -> None:
        if len(val_data) == 0:
            raise ValueError(
                "the validation split is empty: early stopping needs validation images"
            )
        check_imbalance(config.imbalance, class_weights)
        self.config = config
        self.contract = contract
        self.val_data = val_data
        self.out_dir = Path(out_dir)
        self.run_config = dict(run_config or {})
        self.callbacks = list(callbacks)
        self.dist = dist or DistContext(device=select_device(config.device))
        self.progress = progress and self.dist.is_main
        world = self.dist.world_size
        per_rank_batch(config.batch_size, world)  # the global batch must split evenly

        self.device = self.dist.device
        configure_runtime(self.device)
        self.channels_last = config.channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.sync_batchnorm = use_sync_batchnorm(config.sync_batchnorm, self.dist)
        if self.sync_batchnorm:  # batch statistics over the global batch
            model = convert_sync_batchnorm(model, self.device)
        # `model` is the network itself (checkpoints, validation); `net` what trains (DDP)
        self.model = model.to(self.device, memory_format=memory_format)
        self.net: nn.Module = self.model
        if self.dist.distributed:
            self.net = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.transform = BatchTransform(contract, config.augment, channels_last=self.channels_last)

        self.sample_generator = torch.Generator()
        self.augment_generator = torch.Generator()
        self.loader = make_loader(
            train_data,
            config.batch_size,
            train=True,
            imbalance=config.imbalance,
            class_weights=class_weights,
            generator=self.sample_generator,
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
            shard=(self.dist.rank, world),
        )
        self.steps_per_epoch = len(self.loader)
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, int(config.max_steps_per_epoch))
        if self.steps_per_epoch == 0:
            raise ValueError(f"no training batches: {len(train_data)} training images")

        loss_weights = None
        if config.imbalance == "weighted_loss":
            loss_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        self.loss_weights = loss_weights
        self.criterion = nn.CrossEntropyLoss(
            weight=None if loss_weights is None else loss_weights.to(self.device),
            label_smoothing=config.label_smoothing,
        )
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, config.weight_decay), lr=config.lr
        )
        self.scheduler = make_scheduler(
            self.optimizer, config, config.epochs * self.steps_per_epoch
        )

        self.precision = resolve_precision(config.amp, self.device)
        self.use_amp = self.precision.enabled
        self.amp_dtype = self.precision.dtype if self.use_amp else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.scaler)

        # mixup's soft targets span the model's outputs
        self.num_classes = [m for m in self.model.modules() if isinstance(m, nn.Linear)][
            -1
        ].out_features
        self.stored_size = int(train_data.images.shape[1])
        # the EMA lives where validation does: rank 0
        self.ema = (
            ModelEma(self.model, config.ema.decay, warmup=config.ema.warmup)
            if config.ema.enabled and self.dist.is_main
            else None
        )

    # -- one epoch --------------------------------------------------------------------------
    def _seed_epoch(self, epoch: int) -> None:
        base = self.config.seed * 1_000_003 + epoch
        # the sampler alike on every rank (they split one global batch); dropout and
        # augmentation differ per rank (rank 0 draws what a single process draws)
        rank_offset = self.dist.rank << 40
        torch.manual_seed(base + rank_offset)  # dropout (and CUDA)
        self.sample_generator.manual_seed(base + 1)
        self.augment_generator.manual_seed((base + 2) + rank_offset)

    def _loss(
        self, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to backpropagate, this rank's share of the global batch's mean loss).

        One process: the criterion's (weighted) mean. Under DDP each rank's summed loss is
        divided by the weight of the whole global batch (one all-reduce of a scalar) and scaled
        by the world size, so that DDP's gradient average is the gradient of the global
        batch's mean loss, as for one process with the same batch, even with class weights.
        `soft`: mixed targets (train.mix), the same weighted mean via soft_cross_entropy.
        """
        if soft is not None:
            summed, local = soft_cross_entropy(
                logits, soft, self.criterion.weight, self.config.label_smoothing
            )
            if not self.dist.distributed:
                loss = summed / local
                return loss, loss
            share = summed / self.dist.all_reduce_sum(local.clone())
            return share * self.dist.world_size, share
        if not self.dist.distributed:
            loss = self.criterion(logits, labels)
            return loss, loss
        weight = self.criterion.weight
        summed = F.cross_entropy(
            logits,
            labels,
            weight=weight,
            label_smoothing=self.config.label_smoothing,
            reduction="sum",
        )
        if weight is None:
            local = torch.tensor(float(labels.shape[0]), device=logits.device)
        else:
            local = weight[labels].sum().detach()
        share = summed / self.dist.all_reduce_sum(local.clone())
        return share * self.dist.world_size, share

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch; the returned loss and accuracy are over the global batches (all ranks)."""
        self.net.train()
        world = self.dist.world_size
        total_loss = torch.zeros((), device=self.device)
        total_correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        size = self.config.progressive.size(epoch, self.stored_size)
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch}/{self.config.epochs}",
            unit="batch",
            dynamic_ncols=True,
            disable=not self.progress,
        )
        for step, (images, labels) in enumerate(self.loader):
            if step >= self.steps_per_epoch:
                break
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            x = self.transform(images, train=True, generator=self.augment_generator, size=size)
            x, soft = mix_batch(
                x, labels, self.num_classes, self.config.mix, self.augment_generator
            )
            with torch.autocast(
                device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp
            ):
                logits = self.net(x)
            loss, share = self._loss(logits.float(), labels, soft)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss is {loss.item()} at epoch {epoch}, step {step}"
                    f"{f' on rank {self.dist.rank}' if self.dist.distributed else ''}:"
                    " lower train.lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)

            n = labels.shape[0] * world  # the global batch
            seen += n
            total_loss += share.detach() * n
            total_correct += (logits.argmax(dim=1) == labels).sum()
            bar.update()
            if self.progress and (step % 10 == 0 or step + 1 == self.steps_per_epoch):
                bar.set_postfix(  # rank 0's shard: an estimate of the global figures
                    loss=f"{total_loss.item() * world / seen:.4f}",
                    acc=f"{total_correct.item() * world / seen:.3f}",
                    lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                    refresh=False,
                )
        bar.close()
        totals = self.dist.all_reduce_sum(torch.stack([total_loss, total_correct.to(total_loss)]))
        total_loss, total_correct = totals[0], totals[1]
        return {
            "train_loss": total_loss.item() / seen,
            "train_accuracy": round(total_correct.item()) / seen,
            "lr": float(self.scheduler.get_last_lr()[0]),
        }

    @property
    def first_validated_epoch(self) -> int:
        """train.validate_from, or the last epoch when it lies past the end."""
        return min(self.config.validate_from, self.config.epochs)

    def validates(self, epoch: int) -> bool:
        """Whether `epoch` is validated: from train.validate_from on, and always the last one.

        Why skip the early epochs: under a one-cycle schedule the best epoch comes late (9-12
        of 12 in every demo run on the CPU so far), and a validation pass costs about a fifth
        of a demo epoch (two with train.ema), so the demo validates epochs 7-12 only: the same
        best.pt, about a minute less. Training itself is untouched: the same weights come out."""
        return epoch >= self.first_validated_epoch

    def validate(self) -> dict[str, float]:
        """The trained weights on the validation split."""
        return self._validation_metrics(self.model, "val_")

    def validate_ema(self) -> dict[str, float]:
        """The EMA weights on the validation split (keys val_ema_*)."""
        assert self.ema is not None
        return self._validation_metrics(self.ema.module, "val_ema_")

    def _validation_metrics(self, module: nn.Module, prefix: str) -> dict[str, float]:
        logits = predict_logits(
            module,
            self.val_data.images,
            self.contract,
            batch_size=max(64, 2 * self.config.batch_size),
            channels_last=self.channels_last,
        )
        labels = self.val_data.labels
        n_classes = logits.shape[1]
        loss = F.cross_entropy(
            torch.from_numpy(logits), torch.from_numpy(labels), weight=self.loss_weights
        )
        pred = logits.argmax(axis=1)
        return {
            f"{prefix}loss": float(loss),
            f"{prefix}balanced_accuracy": balanced_accuracy(labels, pred, n_classes),
            f"{prefix}macro_f1": macro_f1(labels, pred, n_classes),
            f"{prefix}accuracy": accuracy(labels, pred),
        }

    # -- checkpoints ----------------------------------------------------------------------
    def _checkpoint(
        self,
        state: dict[str, Any],
        model_state: dict[str, torch.Tensor] | None = None,
        weights: str = "model",
        *,
        with_ema: bool = False,
    ) -> dict[str, Any]:
        """`model_state` (default: the trained weights) is what evaluate and package load;
        last.pt also keeps the EMA for resuming."""
        checkpoint = {
            "model_state": model_state if model_state is not None else cpu_state_copy(self.model),
            "weights": weights,
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "scaler_state": self.scaler.state_dict(),
            "config": {"train": asdict(self.config), **self.run_config},
            **state,
        }
        if self.ema is not None and with_ema:
            checkpoint["ema_state"] = self.ema.state_dict()
        return checkpoint

    def _restore(self, path: Path) -> dict[str, Any]:
        checkpoint = load_checkpoint(path)
        saved_model = checkpoint.get("config", {}).get("model")
        if "model" in self.run_config and saved_model != self.run_config["model"]:
            raise ValueError(
                f"cannot resume from {path}: it was trained with model={saved_model}, the "
                f"current config has model={self.run_config['model']}. Delete it to start afresh."
            )
        self._check_schedule(path, checkpoint.get("config", {}).get("train"))
        self.model.load_state_dict(checkpoint["model_state"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        self.scheduler.load_state_dict(checkpoint["scheduler_state"])
        if checkpoint.get("scaler_state"):
            self.scaler.load_state_dict(checkpoint["scaler_state"])
        if self.ema is not None:
            if "ema_state" not in checkpoint:
                raise ValueError(
                    f"cannot resume from {path}: train.ema is on but the checkpoint holds no "
                    "EMA. Delete it to start afresh, or set train.ema.enabled=false."
                )
            self.ema.load_state_dict(checkpoint["ema_state"])
        log.info("resuming from %s after epoch %d", path, checkpoint["epoch"])
        return checkpoint

    def _check_schedule(self, path: Path, saved_train: dict[str, Any] | None) -> None:
        """A changed schedule (epochs, lr, batch size, ...) cannot continue the saved optimizer
        and scheduler state: OneCycleLR, for one, fails mid-run once it passes its old total."""
        if saved_train is None:  # a checkpoint that did not record its train section
            return
        current = self.config.schedule_settings()
        saved_train = {k: v for k, v in saved_train.items() if k not in LEGACY_TRAIN_KEYS}
        try:
            saved = TrainConfig.from_params(saved_train).schedule_settings()
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"cannot resume from {path}: its train settings are not readable ({exc}). "
                f"Delete {path} to start afresh."
            ) from exc
        changed = [
            f"train.{key}: {saved.get(key)!r} -> {current.get(key)!r}"
            for key in sorted(set(saved) | set(current))
            if saved.get(key) != current.get(key)
        ]
        if changed:
            raise ValueError(
                f"cannot resume from {path}: the training schedule changed since it was saved "
                f"({'; '.join(changed)}). Delete {path} to start afresh, or restore the old "
                f"setting."
            )

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        started = time.perf_counter()
        best_path, last_path = self.out_dir / BEST, self.out_dir / LAST
        state: dict[str, Any] = {
            "epoch": 0,
            "best_metric": -math.inf,
            "best_epoch": 0,
            "history": [],
            "epochs_without_improvement": 0,
            "stopped_early": False,
            "monitor": MONITOR,
            "best_weights": "model",  # which weights scored best_metric: "model" or "ema"
        }
        best_weights: dict[str, torch.Tensor] | None = None
        if resume and last_path.exists():
            checkpoint = self._restore(last_path)
            state.update({k: checkpoint[k] for k in state if k in checkpoint})
            if self.dist.is_main and best_path.exists() and state["best_epoch"] > 0:
                best_weights = load_checkpoint(best_path)["model_state"]
        elif resume:
            log.warning("no %s to resume from: starting from epoch 1", last_path)

        patience = self.config.early_stopping_patience
        for epoch in range(state["epoch"] + 1, self.config.epochs + 1):
            if state["stopped_early"]:
                break
            tick = time.perf_counter()
            self._seed_epoch(epoch)
            trained = self.train_epoch(epoch)
            if not self.dist.is_main:  # rank 0 validates, decides and writes; the rest follow
                state = self.dist.broadcast_from_main(None)
                continue
            row: dict[str, float] = {"epoch": epoch, **trained}
            validated = self.validates(epoch)
            score, weights = -math.inf, "model"
            if validated:
                row.update(self.validate())
                score = row[MONITOR]
            if validated and self.ema is not None:
                row.update(self.validate_ema())
                if row[f"val_ema_{PRIMARY_METRIC}"] > score:
                    score, weights = row[f"val_ema_{PRIMARY_METRIC}"], "ema"
            row["seconds"] = time.perf_counter() - tick
            state["history"] = [*state["history"], row]
            state["epoch"] = epoch

            improved = validated and score > state["best_metric"]
            if improved:
                state.update(
                    best_metric=score,
                    best_epoch=epoch,
                    epochs_without_improvement=0,
                    best_weights=weights,
                )
                source = self.ema.module if weights == "ema" else self.model
                best_weights = cpu_state_copy(source)
                save_checkpoint(best_path, self._checkpoint(state, best_weights, weights))
            elif validated:  # an epoch not validated is no evidence for early stopping
                state["epochs_without_improvement"] += 1
            if patience and state["epochs_without_improvement"] >= patience:
                state["stopped_early"] = True
            save_checkpoint(last_path, self._checkpoint(state, with_ema=True))
            self._report(row, improved)
            for callback in self.callbacks:
                callback(row, self)
            if state["stopped_early"]:
                log.info("early stopping: no %s improvement for %d epochs", MONITOR, patience)
            state = self.dist.broadcast_from_main(state)  # every rank stops together

        if best_weights is not None:  # leave the model holding the selected epoch's weights
            self.model.load_state_dict(best_weights)
        return TrainResult(
            best_epoch=state["best_epoch"],
            best_metric=state["best_metric"],
            epochs_run=state["epoch"],
            stopped_early=state["stopped_early"],
            history=state["history"],
            best_path=best_path,
            last_path=last_path,
            seconds=time.perf_counter() - started,
            best_weights=state["best_weights"],
        )

    def _report(self, row: dict[str, float], improved: bool) -> None:
        if self.progress and MONITOR not in row:
            tqdm.write(
                f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}"
                f" acc {row['train_accuracy']:.3f} | validation from epoch"
                f" {self.first_validated_epoch}"
            )
        elif self.progress:
            ema = (
                f" | EMA bal.acc {row['val_ema_balanced_accuracy']:.3f}"
                if "val_ema_balanced_accuracy" in row
                else ""
            )
            tqdm.write(
                f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}"
                f" | val loss {row['val_loss']:.4f} bal.acc {row['val_balanced_accuracy']:.3f}"
                f" macro-F1 {row['val_macro_f1']:.3f}{ema}{'  (best)' if improved else ''}"
            )


def write_history(path: str | Path, history: Sequence[dict[str, float]]) -> Path:
    """reports/train/history.csv: one row per epoch (DVC plots)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        # EMA columns when any epoch has them (epochs before train.validate_from have none)
        extra = [f for f in EMA_FIELDS if any(f in row for row in history)]
        writer = csv.DictWriter(fh, fieldnames=[*HISTORY_FIELDS, *extra], extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
    return path


def read_history(path: str | Path) -> list[dict[str, float | None]]:
    """write_history's rows back as numbers; a blank cell (an epoch before train.validate_from
    has no val_* figures) is None."""
    with Path(path).open(newline="") as fh:
        return [
            {key: float(value) if value != "" else None for key, value in row.items()}
            for row in csv.DictReader(fh)
        ]
