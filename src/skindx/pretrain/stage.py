"""The pretrain stage: the processed images of `pretrain.splits` (never test) -> SimCLR ->
`backbone.pt`, `history.csv` and `pretrain.json` in paths.pretrain_dir, in one MLflow run of
the project's experiment (`mlflow.experiment`), tagged dvc_stage=pretrain.

Reproducible like training: every epoch reseeds the sampler and the view generator from
(seed, epoch); on CPU the same config gives the same backbone.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from skindx import tracking
from skindx.config import ProjectPaths
from skindx.data.processed import SplitArrays, load_split, read_contract
from skindx.inference.hashing import sha256_file
from skindx.inference.metrics import flatten
from skindx.models.checkpoint import save_checkpoint
from skindx.models.weights import BACKBONE_FILE, HISTORY_FILE, write_manifest
from skindx.pretrain.config import PretrainConfig
from skindx.pretrain.outputs import clear_outputs
from skindx.pretrain.simclr import SimCLR, backbone_state, nt_xent
from skindx.pretrain.views import TwoViews
from skindx.runtime import configure_runtime, seed_everything, select_device
from skindx.training.data import make_loader

log = logging.getLogger(__name__)

HISTORY_FIELDS = ("epoch", "loss", "pair_accuracy", "lr", "seconds")


@dataclass
class PretrainResult:
    manifest: dict[str, Any]
    history: list[dict[str, float]]
    backbone_path: Path
    seconds: float


def unlabelled_images(processed_dir: Path, config: PretrainConfig) -> np.ndarray:
    """The uint8 images of `config.splits` (a memory map for one split, a copy for several),
    at most `max_images` of them after a seeded shuffle."""
    arrays = [load_split(processed_dir, split).images for split in config.splits]
    images = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    if config.max_images is not None and len(images) > config.max_images:
        pick = np.random.default_rng(config.seed).permutation(len(images))[: config.max_images]
        images = images[np.sort(pick)]
    return images


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_pct: float):
    """Linear warmup over `warmup_pct` of the steps, then cosine decay to 0 (per step)."""
    warmup = int(round(warmup_pct * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation parameters, as in training."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


class Pretrainer:
    """SimCLR on uint8 NHWC `images` (no labels), on `config.device`."""

    def __init__(
        self, images: np.ndarray, contract, config: PretrainConfig, *, progress: bool = True
    ) -> None:
        self.config = config
        self.progress = progress
        self.device = select_device(config.device)
        configure_runtime(self.device)
        seed_everything(config.seed)  # reproducible random init
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = SimCLR(config.arch, config.projection_hidden, config.projection_dim).to(
            self.device, memory_format=memory_format
        )
        self.views = TwoViews(
            contract,
            config.views,
            grayscale_p=config.grayscale_p,
            channels_last=config.channels_last,
        )
        self.sample_generator = torch.Generator()
        self.view_generator = torch.Generator()
        # labels are never read: the loader gets zeros
        unlabelled = SplitArrays(images, np.zeros(len(images), dtype=np.int64))
        self.loader = make_loader(
            unlabelled,
            config.batch_size,
            train=True,
            generator=self.sample_generator,
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        self.steps_per_epoch = len(self.loader)
        if config.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, int(config.max_steps_per_epoch))
        if self.steps_per_epoch == 0 or len(images) < 2:
            raise ValueError(
                f"{len(images)} images cannot fill a pretraining batch of {config.batch_size}"
            )
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.model, config.weight_decay), lr=config.lr
        )
        self.scheduler = warmup_cosine(
            self.optimizer, config.epochs * self.steps_per_epoch, config.warmup_pct
        )
        self.use_amp = config.amp and self.device.type == "cuda"
        self.amp_dtype = (
            torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16
        )

    def _seed_epoch(self, epoch: int) -> None:
        base = self.config.seed * 1_000_003 + epoch
        torch.manual_seed(base)
        self.sample_generator.manual_seed(base + 1)
        self.view_generator.manual_seed(base + 2)

    def step(self, images: torch.Tensor) -> tuple[float, float]:
        """One optimisation step on a uint8 batch; (loss, pair accuracy)."""
        self.model.train()
        images = images.to(self.device, non_blocking=True)
        view_a, view_b = self.views(images, generator=self.view_generator)
        with torch.autocast(
            device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp
        ):
            z = self.model(torch.cat([view_a, view_b]))
        z_a, z_b = z.float().chunk(2)
        loss, pair_accuracy = nt_xent(z_a, z_b, self.config.temperature)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()}: lower pretrain.lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach()), float(pair_accuracy)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self._seed_epoch(epoch)
        tick = time.perf_counter()
        losses, accuracies = [], []
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"pretrain {epoch}/{self.config.epochs}",
            unit="batch",
            dynamic_ncols=True,
            disable=not self.progress,
        )
        for step, (images, _zeros) in enumerate(self.loader):
            if step >= self.steps_per_epoch:
                break
            loss, accuracy = self.step(images)
            losses.append(loss)
            accuracies.append(accuracy)
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", pair_acc=f"{np.mean(accuracies):.3f}")
        bar.close()
        return {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "pair_accuracy": float(np.mean(accuracies)),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "seconds": time.perf_counter() - tick,
        }

    def backbone(self) -> dict[str, torch.Tensor]:
        return backbone_state(self.model.encoder)


def write_history(path: Path, history: list[dict[str, float]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(HISTORY_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )
    return path


def data_hash(processed_dir: Path) -> str:
    """The ingested dataset's hash, as preprocess recorded it in info.json."""
    try:
        return str(json.loads((processed_dir / "info.json").read_text())["data_hash"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def run_pretrain(
    params: dict[str, Any], *, paths: ProjectPaths | None = None, progress: bool = True
) -> PretrainResult:
    """`params`: the pretrain and mlflow sections plus seed, profile and paths."""
    paths = paths or ProjectPaths.from_params(params)
    config = PretrainConfig.from_params(params["pretrain"], seed=int(params.get("seed") or 0))
    if not config.enabled:
        raise ValueError("pretrain.enabled is false: the stage script writes the marker instead")
    out_dir = paths.pretrain_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_outputs(out_dir)
    contract = read_contract(paths.processed_dir)
    images = unlabelled_images(paths.processed_dir, config)
    digest = data_hash(paths.processed_dir)
    profile = params.get("profile")
    started = time.perf_counter()

    trainer = Pretrainer(images, contract, config, progress=progress)
    mlflow = tracking.configure(params.get("mlflow"))
    with mlflow.start_run(run_name=f"pretrain-{config.method}-{config.arch}") as run:
        mlflow.log_params(
            {
                f"pretrain.{k}": ("null" if v is None else v)
                for k, v in flatten(config.to_dict()).items()
            }
            | {"seed": config.seed, "profile": profile or "none"}
        )
        tags = tracking.lineage_tags("pretrain", profile)
        tags.update(data_hash=digest, pretrain_splits=",".join(config.splits))
        mlflow.set_tags(tags)
        log.info(
            "pretraining %s (%s) on %s: %d unlabelled images of %s at %d px, %d steps per "
            "epoch of %d images (2 views each)",
            config.arch,
            config.method,
            trainer.device,
            len(images),
            "+".join(config.splits),
            contract.input_size,
            trainer.steps_per_epoch,
            config.batch_size,
        )
        history: list[dict[str, float]] = []
        for epoch in range(1, config.epochs + 1):
            row = trainer.train_epoch(epoch)
            history.append(row)
            mlflow.log_metrics(
                {
                    "pretrain_loss": row["loss"],
                    "pretrain_pair_accuracy": row["pair_accuracy"],
                    "pretrain_lr": row["lr"],
                    "pretrain_epoch_seconds": row["seconds"],
                },
                step=epoch,
            )
            if progress:
                tqdm.write(
                    f"pretrain epoch {epoch}: NT-Xent {row['loss']:.4f}, "
                    f"pair accuracy {row['pair_accuracy']:.3f}"
                )
        backbone_path = save_checkpoint(out_dir / BACKBONE_FILE, trainer.backbone())
        history_path = write_history(out_dir / HISTORY_FILE, history)
        seconds = time.perf_counter() - started
        manifest = {
            "enabled": True,
            "method": config.method,
            "arch": config.arch,
            "mlflow_run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "data_hash": digest,
            "git_commit": tags["git_commit"],
            "splits": list(config.splits),
            "n_images": int(len(images)),
            "image_size": int(contract.input_size),
            "epochs": config.epochs,
            "final_loss": history[-1]["loss"],
            "seed": config.seed,
            "seconds": round(seconds, 1),
            "weights": BACKBONE_FILE,
            "weights_sha256": sha256_file(backbone_path),
        }
        mlflow.log_metrics(
            {"pretrain_final_loss": history[-1]["loss"], "pretrain_seconds": seconds}
        )
        mlflow.set_tag("pretrain_weights_sha256", manifest["weights_sha256"])
        manifest_path = write_manifest(out_dir, manifest)  # last: it names a complete backbone
        mlflow.log_artifact(str(manifest_path), artifact_path="pretrain")
        mlflow.log_artifact(str(history_path), artifact_path="pretrain")
    return PretrainResult(manifest, history, backbone_path, seconds)
