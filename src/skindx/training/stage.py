"""The train stage: preprocessed arrays (paths.processed_dir) -> {best,last}.pt and run.json in
paths.train_dir and paths.history_csv, tracked in one MLflow run that evaluate (and package)
continue.

Under torchrun (skindx.training.distributed) every rank calls `run_train` with its DistContext;
rank 0 alone opens the MLflow run and writes run.json, the checkpoints and the history."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from skindx import tracking
from skindx.config import ProjectPaths
from skindx.data.ingest import MANIFEST_FILE
from skindx.data.processed import load_class_weights, load_split, read_contract
from skindx.inference.metrics import PRIMARY_METRIC, flatten
from skindx.models.checkpoint import load_checkpoint, save_checkpoint
from skindx.models.weights import lineage_tags as weights_lineage_tags
from skindx.models.weights import pretrain_lineage
from skindx.runtime import seed_everything
from skindx.training.distributed import DistContext
from skindx.training.loop import TrainConfig, Trainer, TrainResult, write_history

log = logging.getLogger(__name__)

MLFLOW_PARAMS_PER_CALL = 100  # MLflow's log_batch limit
SLIM_DROP = ("optimizer_state", "scheduler_state", "scaler_state", "ema_state")


def log_params(mlflow, params: dict[str, Any]) -> None:
    flat = {k: ("null" if v is None else v) for k, v in flatten(params).items()}
    items = sorted(flat.items())
    for start in range(0, len(items), MLFLOW_PARAMS_PER_CALL):
        mlflow.log_params(dict(items[start : start + MLFLOW_PARAMS_PER_CALL]))


def run_train(
    params: dict[str, Any],
    *,
    all_params: dict[str, Any] | None = None,
    resume: bool = False,
    paths: ProjectPaths | None = None,
    progress: bool = True,
    dist: DistContext | None = None,
) -> TrainResult:
    """`params`: the model, train and mlflow sections plus seed, profile and paths (`paths`
    overrides the latter); `all_params` (default `params`) is what MLflow records as the run's
    parameters. `dist`: this rank of a torchrun job (None: one process)."""
    paths = paths or ProjectPaths.from_params(params)
    processed_dir, out_dir = paths.processed_dir, paths.train_dir
    model_cfg = dict(params["model"])
    seed = int(params.get("seed") or 0)
    profile = params.get("profile")
    config = TrainConfig.from_params(params["train"], seed=seed)

    classes, class_weights = load_class_weights(processed_dir)
    if len(classes) != int(model_cfg["num_classes"]):
        raise ValueError(
            f"model.num_classes={model_cfg['num_classes']} but the data has {len(classes)} classes {classes}"
        )
    contract = read_contract(processed_dir)
    train_data, val_data = load_split(processed_dir, "train"), load_split(processed_dir, "val")
    run_config = {
        "model": model_cfg,
        "train": params["train"],
        "seed": seed,
        "profile": profile,
        "classes": classes,
        "contract": contract.to_dict(),
    }

    seed_everything(seed)
    from skindx.models.factory import build_model  # after seeding: reproducible random init

    model = build_model(**model_cfg)
    # a backbone from the pretrain stage: its run (MLflow id, data hash) goes into the
    # checkpoint's config (hence the model card) and the run's tags; nothing otherwise
    pretrained = pretrain_lineage(model_cfg.get("weights"))
    if pretrained:
        run_config["pretrain"] = pretrained

    main = dist is None or dist.is_main
    # one MLflow run per job: the other ranks log nowhere
    mlflow = tracking.configure(params.get("mlflow")) if main else tracking.NullTracker()
    run_file = tracking.run_file(out_dir)
    previous = tracking.pipeline_run_id(run_file) if resume and main else None
    start = (
        {"run_id": previous}
        if previous
        else {"run_name": f"{profile or 'run'}-{model_cfg['arch']}"}
    )
    with mlflow.start_run(**start) as run:
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            run_file.write_text(
                json.dumps(
                    {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id},
                    indent=2,
                )
            )
        if not previous and main:
            log_params(mlflow, all_params or params)
        manifest = paths.raw_dir / MANIFEST_FILE
        mlflow.set_tags(tracking.lineage_tags("train", profile, manifest=manifest))
        mlflow.set_tags(weights_lineage_tags(pretrained))
        tracking.log_split_datasets(mlflow, processed_dir, tracking.data_hash(manifest))

        def log_epoch(row: dict[str, float], trainer: Trainer) -> None:
            metrics = {k: float(v) for k, v in row.items() if k != "epoch"}
            mlflow.log_metrics(metrics, step=int(row["epoch"]))

        trainer = Trainer(
            model,
            train_data,
            val_data,
            contract,
            config,
            class_weights=class_weights,
            out_dir=out_dir,
            run_config=run_config,
            callbacks=[log_epoch],
            progress=progress,
            dist=dist,
        )
        world = trainer.dist.world_size
        # which precision ran (train.amp resolved on this machine), for comparing runs
        mlflow.set_tags(
            {
                "train.precision": trainer.precision.name,
                "train.precision_reason": trainer.precision.reason,
            }
        )
        if main:
            log.info(
                "training %s on %s: %d train / %d val images at %d px, %d steps per epoch of "
                "%d images, %s%s",
                model_cfg["arch"],
                trainer.device,
                len(train_data),
                len(val_data),
                contract.input_size,
                trainer.steps_per_epoch,
                config.batch_size,
                trainer.precision.name,
                f" ({world} ranks x {config.batch_size // world}, {trainer.dist.backend}"
                f"{', SyncBatchNorm' if trainer.sync_batchnorm else ''})"
                if world > 1
                else "",
            )
        result = trainer.fit(resume=resume)
        if not main:
            return result
        write_history(paths.history_csv, result.history)
        mlflow.log_metrics(
            {
                f"best_val_{PRIMARY_METRIC}": result.best_metric,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "train_seconds": result.seconds,
            }
        )
        # best.pt's model_state: the trained weights ("model") or their EMA ("ema")
        mlflow.set_tag("train.best_weights", result.best_weights)
        log_best_weights(mlflow, result.best_path)
        mlflow.log_artifact(str(paths.history_csv), artifact_path="train")
    return result


def log_best_weights(mlflow, best_path: Path) -> None:
    """The best checkpoint as an MLflow artifact `checkpoint/best.pt`, without the optimizer
    and scheduler state (a third of the size; resuming uses models/train/last.pt)."""
    import tempfile

    checkpoint = load_checkpoint(best_path)
    slim = {k: v for k, v in checkpoint.items() if k not in SLIM_DROP}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "best.pt", slim)
        mlflow.log_artifact(str(path), artifact_path="checkpoint")
