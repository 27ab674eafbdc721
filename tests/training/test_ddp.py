"""Data-parallel training (skindx.training.distributed): the sharding, the launch settings and
the failure report (fast), and the train stage under real torchrun with 2 gloo ranks on CPU on
the quick profile (slow): one MLflow run and one set of checkpoints, the same numbers as one
process with the same global batch, a killed rank failing the stage quickly and by name, and
--resume continuing the interrupted DDP run.

Why the agreement can be tight. With the same seed both runs draw the same global batches
(every rank draws the whole batch and keeps its shard); the loss is normalised by the global
batch's class weight and DDP averages the gradients, so each step is the single-process step;
BatchNorm uses the global batch's statistics (GlobalBatchNorm2d over gloo). What stays random per
rank by design is dropout and augmentation (a rank draws its own stream for its shard, which is
statistically but not numerically what one process draws for the whole batch), so the agreement
runs switch both off. The remaining difference is float32 summation order (partial sums on two
ranks, then an all-reduce): ~1e-7 relative in the first step's loss (nothing trained yet),
growing through the optimiser (Adam divides by tiny second moments) to ~1e-4 after a few steps
(measured 2e-4 on the third step's loss). Tolerances: 1e-5 on the first-step loss, 2e-3 on later
losses; the accuracy-type metrics may differ by one validation image's worth at most; the
weights by 5% of the distance training moved them (measured 1.2%).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.utils.data import RandomSampler

from skindx.config import compose_config, write_params
from skindx.training.distributed import (
    DistContext,
    GlobalBatchNorm2d,
    LaunchSettings,
    ShardedBatchSampler,
    convert_sync_batchnorm,
    describe_failure,
    per_rank_batch,
    use_sync_batchnorm,
)
from skindx.training.loop import TrainConfig

REPO = Path(__file__).resolve().parents[2]
NO_RANDOMNESS = [
    "model.dropout=0",
    "train.augment.hflip=false",
    "train.augment.vflip=false",
    "train.augment.rot90=false",
    "train.augment.random_resized_crop_scale=null",
    "train.augment.color_jitter=0",
]


# -- fast: the pieces ---------------------------------------------------------------------------
def _shards(seed: int, n: int, batch: int, world: int, drop_last: bool = True):
    out = []
    for rank in range(world):
        g = torch.Generator().manual_seed(seed)
        out.append(
            list(
                ShardedBatchSampler(
                    RandomSampler(range(n), generator=g),
                    batch,
                    rank=rank,
                    world_size=world,
                    drop_last=drop_last,
                )
            )
        )
    return out


def test_the_ranks_shards_make_up_the_single_process_batches():
    g = torch.Generator().manual_seed(3)
    single = [
        b
        for b in torch.utils.data.BatchSampler(
            RandomSampler(range(50), generator=g), 16, drop_last=True
        )
    ]
    shards = _shards(3, 50, 16, 2)
    assert len(shards[0]) == len(shards[1]) == len(single) == 3
    for step, batch in enumerate(single):
        a, b = shards[0][step], shards[1][step]
        assert len(a) == len(b) == 8
        assert not set(a) & set(b)  # each image on one rank only
        assert sorted(a + b) == sorted(batch)


def test_same_seed_same_shards_other_seed_others():
    assert _shards(5, 40, 8, 4) == _shards(5, 40, 8, 4)
    assert _shards(5, 40, 8, 4) != _shards(6, 40, 8, 4)


def test_short_last_batch_is_padded_evenly_when_kept():
    shards = _shards(0, 13, 8, 2, drop_last=False)
    assert [len(s) for s in shards[0]] == [4, 3] and [len(s) for s in shards[1]] == [4, 3]
    assert set(sum(shards[0] + shards[1], [])) == set(range(13))


def test_the_global_batch_must_split_evenly():
    assert per_rank_batch(32, 4) == 8
    with pytest.raises(ValueError, match=r"batch_size=30 is the global batch.*world size 4"):
        per_rank_batch(30, 4)
    with pytest.raises(ValueError, match="BatchNorm needs at least 2"):
        per_rank_batch(4, 4)


def test_launch_settings_and_the_torchrun_command():
    single = LaunchSettings.from_train(TrainConfig().__dict__)
    assert not single.distributed and single.world_size == 1
    local = LaunchSettings(nproc_per_node=2)
    assert local.torchrun_args("train.py", ["--resume"]) == [
        "--nproc-per-node=2",
        "--standalone",
        "--max-restarts=0",
        "--monitor-interval=0.5",
        "train.py",
        "--resume",
    ]
    nodes = LaunchSettings(nproc_per_node=4, nnodes=2, rdzv_endpoint="node0:29400")
    assert nodes.world_size == 8
    args = nodes.torchrun_args("train.py")
    for flag in (
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=node0:29400",
        "--rdzv-id=skindx",
    ):
        assert flag in args
    with pytest.raises(ValueError, match="needs train.rdzv_endpoint"):
        LaunchSettings(nnodes=2)


def test_the_launch_keys_do_not_block_a_resume():
    """A run may resume with another world size: the global batch (the schedule) is the same."""
    a = TrainConfig.from_params({"nproc_per_node": 1})
    b = TrainConfig.from_params({"nproc_per_node": 4, "nnodes": 2, "rdzv_endpoint": "h:1"})
    assert a.schedule_settings() == b.schedule_settings()
    with pytest.raises(ValueError, match="sync_batchnorm"):
        TrainConfig.from_params({"sync_batchnorm": "maybe"})


def test_a_failed_rank_is_named_with_its_signal_and_pid(tmp_path):
    failure = ProcessFailure(
        local_rank=1, pid=4242, exitcode=-signal.SIGKILL, error_file=str(tmp_path / "none")
    )
    message = describe_failure(ChildFailedError("train.py", {1: failure}))
    assert message == "rank 1 (local rank 1, pid 4242) was killed by SIGKILL"
    exited = ProcessFailure(local_rank=0, pid=7, exitcode=1, error_file=str(tmp_path / "none"))
    assert "rank 2 (local rank 0, pid 7) exited with code 1" in describe_failure(
        ChildFailedError("train.py", {2: exited})
    )


def test_global_batchnorm_is_batchnorm_for_one_process_and_in_eval():
    from skindx.models import build_model

    torch.manual_seed(0)
    plain = build_model("resnet18", num_classes=7, dropout=0.0, weights="none")
    converted = convert_sync_batchnorm(
        build_model("resnet18", num_classes=7, dropout=0.0, weights="none"), torch.device("cpu")
    )
    converted.load_state_dict(plain.state_dict())  # same keys as BatchNorm2d
    assert any(isinstance(m, GlobalBatchNorm2d) for m in converted.modules())
    x = torch.randn(4, 3, 32, 32)
    for mode in (True, False):
        plain.train(mode), converted.train(mode)
        torch.testing.assert_close(converted(x), plain(x))
    assert not use_sync_batchnorm("auto", DistContext())  # a world of one needs none
    assert use_sync_batchnorm("auto", DistContext(world_size=2))
    assert not use_sync_batchnorm("off", DistContext(world_size=2))


# -- slow: the stage under torchrun -------------------------------------------------------------
def _project(root: Path, processed_dir: Path, overrides: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(processed_dir, root / "data" / "processed")
    params = compose_config(["experiment=quick", *overrides], conf_dir=REPO / "conf")
    write_params(params, root / "params.yaml")
    return root


def _env(project: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("SKINDX_TRACKING", None)
    return env


def _train(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "train.py"), *args],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _history(project: Path) -> list[dict[str, float]]:
    import csv

    with (project / "reports/train/history.csv").open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _runs(project: Path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("skindx")
    return client, client.search_runs([experiment.experiment_id])


AGREE = ["train.epochs=3", "train.max_steps_per_epoch=1", *NO_RANDOMNESS]


@pytest.mark.slow
def test_ddp_stage_matches_one_process_with_one_run_and_one_checkpoint(processed_dir, tmp_path):
    single = _project(tmp_path / "single", processed_dir, AGREE)
    ddp = _project(tmp_path / "ddp", processed_dir, [*AGREE, "train.nproc_per_node=2"])
    done = _train(single)
    assert done.returncode == 0, done.stderr[-3000:]
    done = _train(ddp)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torchrun --nproc-per-node=2 --standalone" in done.stderr
    assert "2 ranks x 8, gloo" in done.stderr  # global batch 16 split over two ranks
    assert "(2 ranks, gloo)" in done.stdout

    # rank 0 alone wrote the outputs and tracked: one run, one set of checkpoints
    assert sorted(p.name for p in (ddp / "models/train").iterdir()) == [
        "best.pt",
        "last.pt",
        "run.json",
    ]
    client, runs = _runs(ddp)
    assert len(runs) == 1
    assert runs[0].info.run_id == json.loads((ddp / "models/train/run.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [
        1,
        2,
        3,
    ]
    assert runs[0].data.params["train.nproc_per_node"] == "2"
    checkpoint = torch.load(ddp / "models/train/last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in checkpoint["model_state"])  # not DDP's

    # the same numbers as one process with the same global batch (module docstring)
    one, two = _history(single), _history(ddp)
    assert [r["epoch"] for r in two] == [1.0, 2.0, 3.0]
    assert two[0]["train_loss"] == pytest.approx(one[0]["train_loss"], rel=1e-5)  # first step
    n_val = 21
    for a, b in zip(one, two, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-3)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=2e-3)
        assert b["lr"] == pytest.approx(a["lr"])
        assert abs(b["train_accuracy"] - a["train_accuracy"]) <= 1 / 16 + 1e-9
        assert abs(b["val_accuracy"] - a["val_accuracy"]) <= 1 / n_val + 1e-9
        # one validation image of the rarest class (3 here) out of 7 classes
        assert abs(b["val_balanced_accuracy"] - a["val_balanced_accuracy"]) <= 1 / 21 + 1e-9
    # the weights: Adam moves a weight with a near-zero gradient by about lr whatever the
    # gradient's size, so the summation-order noise shows on single elements; measure the whole
    # difference against how far training moved the weights (measured 1.2%; BatchNorm over
    # each rank's half batch gives far more)
    from skindx.models import build_model
    from skindx.runtime import seed_everything

    seed_everything(int(checkpoint["config"]["seed"]))
    init = build_model(**checkpoint["config"]["model"]).state_dict()
    one_state = torch.load(single / "models/train/last.pt", weights_only=True)["model_state"]
    two_state = checkpoint["model_state"]
    learned = [k for k, v in one_state.items() if v.is_floating_point() and "running" not in k]
    moved = torch.cat([(one_state[k] - init[k]).flatten() for k in learned]).norm()
    apart = torch.cat([(two_state[k] - one_state[k]).flatten() for k in learned]).norm()
    assert moved > 0.1 and apart / moved < 0.05, (float(apart), float(moved))
    for key in (k for k in one_state if "running" in k):  # global-batch BatchNorm statistics
        gap = (two_state[key] - one_state[key]).norm() / one_state[key].norm()
        assert gap < 0.02, (key, float(gap))  # measured at most 1.1e-3


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if (
                child.environ().get("RANK") == str(rank)
                and "TORCHELASTIC_RUN_ID" in child.environ()
            ):
                return child.pid
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_a_killed_rank_fails_the_stage_by_name_and_resume_finishes(processed_dir, tmp_path):
    project = _project(
        tmp_path / "kill",
        processed_dir,
        ["train.epochs=6", "train.max_steps_per_epoch=1", "train.nproc_per_node=2"],
    )
    launcher = subprocess.Popen(
        [sys.executable, str(REPO / "pipelines" / "train.py")],
        cwd=project,
        env=_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = project / "models/train/last.pt"
    try:
        deadline = time.monotonic() + 400
        while not last.exists():  # the first epoch finished on every rank
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
        victim = _rank_pid(launcher, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = launcher.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 1
    assert took < 60, f"the stage took {took:.0f} s to fail after the kill"
    # (rank 0 may be listed too: its collective fails once its peer is gone)
    assert "train: error: distributed training failed: " in stderr
    assert f"rank 1 (local rank 1, pid {victim}) was killed by SIGKILL" in stderr
    assert "python pipelines/train.py --resume" in stderr
    _, runs = _runs(project)
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    done_epochs = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= done_epochs < 6

    resumed = _train(project, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"last.pt after epoch {done_epochs}" in resumed.stderr  # "resuming from ..."
    assert [r["epoch"] for r in _history(project)] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    _, runs = _runs(project)
    assert [r.info.run_id for r in runs] == [run_id]  # the same MLflow run continues


@pytest.mark.slow
def test_a_global_batch_that_does_not_split_fails_before_any_rank_starts(processed_dir, tmp_path):
    project = _project(
        tmp_path / "odd", processed_dir, ["train.nproc_per_node=3", "train.batch_size=16"]
    )
    done = _train(project, timeout=300)
    assert done.returncode == 1
    assert "train: error: train.batch_size=16 is the global batch" in done.stderr
    assert "torchrun" not in done.stderr and not (project / "models").exists()


def test_the_kubernetes_manifests_run_the_trainer_image_under_torchrun():
    """Shape only: no cluster here (the manifests say they are untested)."""
    import yaml

    k8s = REPO / "deploy/k8s"
    job = {d["kind"]: d for d in yaml.safe_load_all((k8s / "trainer-indexed-job.yaml").read_text())}
    pod = job["Job"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["torchrun"] and container["args"][-1] == "pipelines/train.py"
    nodes = job["Job"]["spec"]["completions"]
    assert job["Job"]["spec"]["parallelism"] == nodes
    assert f"--nnodes={nodes}" in container["args"] and "--rdzv-backend=c10d" in container["args"]
    endpoint = f"{job['Job']['metadata']['name']}-0.{pod['subdomain']}:29400"
    assert f"--rdzv-endpoint={endpoint}" in container["args"]
    assert job["Service"]["metadata"]["name"] == pod["subdomain"]
    assert job["Service"]["spec"]["clusterIP"] == "None"
    torchjob = yaml.safe_load((k8s / "trainer-pytorchjob.yaml").read_text())
    assert torchjob["kind"] == "PyTorchJob"
    for replica in torchjob["spec"]["pytorchReplicaSpecs"].values():
        (trainer,) = replica["template"]["spec"]["containers"]
        assert trainer["name"] == "pytorch" and trainer["command"][-1] == "pipelines/train.py"
    for text in (
        (k8s / name).read_text() for name in ("trainer-indexed-job.yaml", "trainer-pytorchjob.yaml")
    ):
        assert "UNTESTED HERE" in text and "skindx/trainer:latest" in text
    assert "/trainer:latest" in (REPO / "docker-compose.yml").read_text()
