"""The optional pretrain stage (skindx.pretrain, docs/pretraining.md): SimCLR learns from
unlabelled training images, the backbone loads into the classifier through model.weights, the
train run and the model card name the pretraining run, and the stage switched off is a no-op
that costs a fraction of a second and leaves train untouched.

Fast tests run in-process on the real 32 px arrays of `processed_dir` (resnet18, a few steps);
the slow ones run the real DVC pipeline on the quick profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skindx.config import ProjectPaths, compose_config, write_params
from skindx.models.weights import (
    BACKBONE_FILE,
    DISABLED_MANIFEST,
    MANIFEST_FILE,
    PretrainLineageError,
    pretrain_lineage,
)
from tests.conftest import REPO_ROOT

QUICK_PRETRAIN = [
    "experiment=quick",
    "pretrain=simclr",
    "pretrain.epochs=2",
    "pretrain.max_steps_per_epoch=1",
]


def quick_params(*overrides: str) -> dict:
    return compose_config([*QUICK_PRETRAIN, *overrides], conf_dir=REPO_ROOT / "conf")


# --- the loss -------------------------------------------------------------------------------


def test_nt_xent_is_low_for_matching_views_and_log_2n_minus_1_for_unrelated_ones():
    import math

    import torch

    from skindx.pretrain.simclr import nt_xent

    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=g)
    matched, matched_acc = nt_xent(z, z + 0.01 * torch.randn(32, 16, generator=g), 0.2)
    unrelated, _ = nt_xent(z, torch.randn(32, 16, generator=g), 0.2)
    assert matched_acc == 1.0 and matched < 1.0
    # unrelated views: the partner is one of 2N - 1 = 63 equally likely candidates
    assert unrelated > math.log(63) - 0.5
    with pytest.raises(ValueError, match="two"):
        nt_xent(z[:1], z[:1], 0.2)


def test_the_test_split_is_never_pretrained_on():
    from skindx.pretrain.config import PretrainConfig

    section = quick_params()["pretrain"]
    with pytest.raises(ValueError, match="test split is never used"):
        PretrainConfig.from_params({**section, "splits": ["train", "test"]})
    assert PretrainConfig.from_params({**section, "splits": ["train", "val"]}).splits == (
        "train",
        "val",
    )


def test_two_views_of_an_image_differ_and_grey_views_stay_grey(processed_dir):
    import torch

    from skindx.data.processed import load_split, read_contract
    from skindx.pretrain.views import TwoViews

    contract = read_contract(processed_dir)
    batch = torch.from_numpy(load_split(processed_dir, "train").images[:8].copy())
    section = quick_params()["pretrain"]
    mean = torch.tensor(contract.mean).view(1, 3, 1, 1)
    std = torch.tensor(contract.std).view(1, 3, 1, 1)
    for p, grey in ((1.0, True), (0.0, False)):
        views = TwoViews(contract, section["views"], grayscale_p=p)
        a, b = views(batch, generator=torch.Generator().manual_seed(0))
        assert a.shape == b.shape == (8, 3, contract.input_size, contract.input_size)
        assert not torch.allclose(a, b)  # independent crops, flips and jitter
        pixels = a * std + mean  # back to [0, 1] RGB
        spread = (pixels.amax(dim=1) - pixels.amin(dim=1)).max().item()
        assert (spread < 1e-5) == grey, (p, spread)


@pytest.mark.slow
def test_the_contrastive_loss_falls_over_a_few_steps(processed_dir):
    """Four SimCLR steps on one batch with the same two views each time: NT-Xent falls from
    about log(2N - 1) and the views find their partners (the optimisation works end to end:
    views, encoder, projector, loss, AdamW, schedule)."""
    import torch

    from skindx.data.processed import load_split, read_contract
    from skindx.pretrain.config import PretrainConfig
    from skindx.pretrain.stage import Pretrainer

    section = {**quick_params()["pretrain"], "epochs": 10, "warmup_pct": 0.0}
    config = PretrainConfig.from_params(section, seed=3)
    images = load_split(processed_dir, "train").images
    trainer = Pretrainer(images, read_contract(processed_dir), config, progress=False)
    batch = torch.from_numpy(images[:16].copy())
    steps = []
    for _ in range(4):
        trainer.view_generator.manual_seed(5)  # the same views every step
        steps.append(trainer.step(batch))
    (first_loss, first_acc), (last_loss, last_acc) = steps[0], steps[-1]
    assert last_loss < first_loss - 1.0, steps
    assert last_acc > first_acc, steps


# --- the stage, its outputs and the backbone in the classifier --------------------------------


@pytest.fixture(scope="module")
def pretrained(processed_dir, tmp_path_factory):
    """run_pretrain in-process (real MLflow SQLite store), quick profile, 2 epochs x 1 step."""
    from skindx.pretrain.stage import run_pretrain

    root = tmp_path_factory.mktemp("pretrain")
    shutil.copytree(processed_dir, root / "data" / "processed")
    params = quick_params()
    params["paths"] = {k: str(root / v) for k, v in params["paths"].items()}
    params["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        result = run_pretrain(params, progress=False)
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return result, params


@pytest.mark.slow
def test_the_stage_writes_a_plain_backbone_state_dict_and_a_manifest(pretrained):
    import torch

    result, params = pretrained
    out = ProjectPaths.from_params(params).pretrain_dir
    assert sorted(p.name for p in out.iterdir()) == [BACKBONE_FILE, "history.csv", MANIFEST_FILE]
    state = torch.load(out / BACKBONE_FILE, weights_only=True)  # no pickled objects
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any(k.startswith("fc.") for k in state)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest == result.manifest
    assert manifest["splits"] == ["train"] and manifest["arch"] == "resnet18"
    assert manifest["n_images"] == 56 and manifest["epochs"] == 2
    assert len((out / "history.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_the_stage_logs_its_run_to_mlflow(pretrained):
    import mlflow

    result, params = pretrained
    client = mlflow.MlflowClient(tracking_uri=params["mlflow"]["tracking_uri"])
    run = client.get_run(result.manifest["mlflow_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == params["mlflow"]["experiment"]
    assert run.data.tags["dvc_stage"] == "pretrain"
    assert run.data.tags["data_hash"] == result.manifest["data_hash"] != "unknown"
    assert run.data.params["pretrain.method"] == "simclr"
    losses = client.get_metric_history(run.info.run_id, "pretrain_loss")
    assert [m.step for m in losses] == [1, 2]


@pytest.mark.slow
def test_the_backbone_loads_into_the_classifier_with_a_new_head(pretrained):
    import torch

    from skindx.models import build_model

    result, _ = pretrained
    saved = torch.load(result.backbone_path, weights_only=True)
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=7, dropout=0.2, weights=result.backbone_path)
    own = model.state_dict()
    for key, tensor in saved.items():
        assert torch.equal(own[key], tensor), key
    assert set(own) - set(saved) == {"fc.1.weight", "fc.1.bias"}  # the new head
    torch.manual_seed(0)
    scratch = build_model("resnet18", num_classes=7, dropout=0.2, weights="none")
    assert torch.equal(scratch.state_dict()["fc.1.weight"], own["fc.1.weight"])
    assert not torch.equal(scratch.state_dict()["conv1.weight"], own["conv1.weight"])


@pytest.mark.slow
def test_a_backbone_of_another_architecture_is_refused(pretrained):
    from skindx.models import ModelWeightsError, build_model

    result, _ = pretrained
    with pytest.raises(ModelWeightsError, match="do not fit"):
        build_model("resnet50", weights=result.backbone_path)


@pytest.mark.slow
def test_lineage_names_the_run_and_refuses_a_changed_backbone(pretrained, tmp_path):
    result, _ = pretrained
    lineage = pretrain_lineage(result.backbone_path)
    assert lineage["mlflow_run_id"] == result.manifest["mlflow_run_id"]
    assert pretrain_lineage("none") is None and pretrain_lineage("imagenet") is None
    copy = tmp_path / "pretrain"
    shutil.copytree(result.backbone_path.parent, copy)
    with (copy / BACKBONE_FILE).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PretrainLineageError, match="changed after"):
        pretrain_lineage(copy / BACKBONE_FILE)


@pytest.mark.slow
def test_the_train_run_and_its_checkpoint_name_the_pretraining_run(pretrained):
    """run_train from the backbone (one step): the MLflow tags and checkpoint config carry the
    pretraining run (the package stage copies the latter into the card: the slow test)."""
    import mlflow
    import torch

    from skindx.training.stage import run_train

    result, params = pretrained
    train_params = {
        **params,
        "model": {**params["model"], "weights": str(result.backbone_path)},
        "train": {**params["train"], "epochs": 1, "max_steps_per_epoch": 1},
    }
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        trained = run_train(train_params, progress=False)
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    client = mlflow.MlflowClient(tracking_uri=params["mlflow"]["tracking_uri"])
    run_id = json.loads((Path(params["paths"]["train_dir"]) / "run.json").read_text())["run_id"]
    tags = client.get_run(run_id).data.tags
    assert tags["pretrain_run_id"] == result.manifest["mlflow_run_id"] != run_id
    assert tags["pretrain_data_hash"] == result.manifest["data_hash"]
    assert tags["pretrain_method"] == "simclr"
    checkpoint = torch.load(trained.best_path, weights_only=True)
    assert checkpoint["config"]["pretrain"] == result.manifest


# --- switched off ---------------------------------------------------------------------------


def test_the_disabled_stage_writes_a_fixed_marker_without_importing_torch(tmp_path):
    """pretrain.enabled=false (the default): only pretrain.json = {"enabled": false}, byte for
    byte the same on every run, stale outputs removed, and torch never imported."""
    params = compose_config(["experiment=quick"], conf_dir=REPO_ROOT / "conf")
    assert params["pretrain"]["enabled"] is False and params["model"]["weights"] == "none"
    write_params(params, tmp_path / "params.yaml")
    out = tmp_path / params["paths"]["pretrain_dir"]
    out.mkdir(parents=True)
    (out / BACKBONE_FILE).write_bytes(b"stale")
    probe = (
        "import runpy, sys; sys.argv = ['pretrain.py']; "
        f"runpy.run_path({str(REPO_ROOT / 'pipelines' / 'pretrain.py')!r}, run_name='__main__'); "
        "print('torch imported:', 'torch' in sys.modules)"
    )
    markers = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "torch imported: False" in done.stdout and "pretrain: off" in done.stdout
        assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE]
        markers.append((out / MANIFEST_FILE).read_bytes())
    assert markers[0] == markers[1] and json.loads(markers[0]) == DISABLED_MANIFEST


def test_weights_pointing_at_a_disabled_stage_say_how_to_turn_it_on(tmp_path):
    from skindx.models import ModelWeightsError, build_model
    from skindx.pretrain.outputs import write_disabled

    write_disabled(tmp_path)
    with pytest.raises(ModelWeightsError, match="pretrain=simclr"):
        build_model("resnet18", weights=tmp_path / BACKBONE_FILE)
    assert pretrain_lineage(tmp_path / BACKBONE_FILE) is None


# --- in the pipeline (real DVC, real MLflow, quick profile) ---------------------------------


def _recompose(project, *overrides: str) -> dict:
    params = compose_config(["experiment=quick", *overrides], conf_dir=project.path / "conf")
    write_params(params, project.path / "params.yaml")
    return params


@pytest.mark.slow
def test_a_disabled_pretrain_stage_leaves_train_untouched(quick_project, tmp_path):
    """In `dvc repro`, the stage off: only the marker, and rerunning it (a changed pretrain
    setting) does not rerun train, whose checkpoint keeps its bytes."""
    from skindx.inference.hashing import sha256_file
    from tests.conftest import run_dvc

    paths = ProjectPaths.from_params(_params_of(quick_project.path))
    out = quick_project.path / paths.pretrain_dir
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE]
    assert json.loads((out / MANIFEST_FILE).read_text()) == DISABLED_MANIFEST
    project = quick_project.copy_to(tmp_path / "p")
    best = project.path / paths.train_dir / "best.pt"
    before = sha256_file(best)
    _recompose(project, "pretrain.epochs=3")
    done = run_dvc(project.path, "repro", "train", env=project.env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Running stage 'pretrain'" in done.stdout
    assert "Running stage 'train'" not in done.stdout, done.stdout
    assert sha256_file(best) == before


@pytest.mark.slow
def test_a_pretrained_pipeline_names_the_pretraining_run(quick_project, tmp_path):
    """pretrain=simclr: pretrain runs before train, train starts from its backbone, and the
    train run's tags, the checkpoint and the model card name the pretraining run."""
    import mlflow
    import torch

    from tests.conftest import run_dvc

    project = quick_project.copy_to(tmp_path / "p")
    params = _recompose(project, *QUICK_PRETRAIN[1:])
    paths = ProjectPaths.from_params(params)
    done = run_dvc(project.path, "repro", "package", env=project.env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.index("Running stage 'pretrain'") < done.stdout.index(
        "Running stage 'train'"
    )
    manifest = json.loads((project.path / paths.pretrain_dir / MANIFEST_FILE).read_text())
    assert manifest["enabled"] and manifest["arch"] == "resnet18"

    client = mlflow.MlflowClient(tracking_uri=project.env["MLFLOW_TRACKING_URI"])
    pre_run = client.get_run(manifest["mlflow_run_id"])
    assert pre_run.data.tags["dvc_stage"] == "pretrain"
    train_ref = json.loads((project.path / paths.train_dir / "run.json").read_text())
    train_run = client.get_run(train_ref["run_id"])
    tags = train_run.data.tags
    assert tags["pretrain_run_id"] == manifest["mlflow_run_id"]
    assert tags["pretrain_data_hash"] == manifest["data_hash"] == tags["data_hash"]
    assert train_run.data.params["model.weights"] == f"{paths.pretrain_dir}/{BACKBONE_FILE}"

    checkpoint = torch.load(project.path / paths.train_dir / "best.pt", weights_only=True)
    assert checkpoint["config"]["pretrain"]["mlflow_run_id"] == manifest["mlflow_run_id"]
    card = json.loads((project.path / paths.candidate_dir / "model.json").read_text())
    assert card["lineage"]["pretrain"]["mlflow_run_id"] == manifest["mlflow_run_id"]
    assert card["lineage"]["pretrain"]["data_hash"] == card["lineage"]["data_hash"]
    # the default pipeline's card says "not pretrained"
    default_card = json.loads((quick_project.path / paths.candidate_dir / "model.json").read_text())
    assert default_card["lineage"]["pretrain"] is None


def _params_of(project_path: Path) -> dict:
    from skindx.config import load_params

    return load_params(project_path / "params.yaml")
