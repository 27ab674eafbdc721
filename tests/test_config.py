"""conf/ (Hydra) is the source of truth; params.yaml is its committed composition."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from skindx.config import ProjectPaths, compose_config, flatten, load_params, stage_params
from tests.conftest import REPO_ROOT

PROFILES = ["quick", "demo", "full"]


def test_params_yaml_equals_composition_of_conf():
    composed = compose_config(conf_dir=REPO_ROOT / "conf")
    committed = load_params(REPO_ROOT / "params.yaml")
    assert committed == composed, (
        "params.yaml differs from the composition of conf/: run `make params` and commit it"
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_composes_with_all_stage_sections(profile):
    cfg = compose_config([f"experiment={profile}"], conf_dir=REPO_ROOT / "conf")
    assert cfg["profile"] == profile
    for section in ("data", "model", "train", "evaluate", "package", "promote", "mlflow"):
        assert isinstance(cfg[section], dict), section
    assert cfg["data"]["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def test_quick_profile_is_small_and_full_profile_uses_every_image():
    quick = compose_config(["experiment=quick"], conf_dir=REPO_ROOT / "conf")
    full = compose_config(["experiment=full"], conf_dir=REPO_ROOT / "conf")
    assert quick["data"]["max_per_class"] <= 20 and quick["train"]["epochs"] == 1
    assert full["data"]["max_per_class"] is None and full["data"]["train_max_per_class"] is None
    assert full["data"]["image_size"] > quick["data"]["image_size"]


def test_command_line_style_overrides_reach_the_stage_sections():
    cfg = compose_config(
        ["model=resnet18", "train.epochs=1", "data.split.seed=7"], conf_dir=REPO_ROOT / "conf"
    )
    assert cfg["model"]["arch"] == "resnet18"
    assert cfg["train"]["epochs"] == 1
    assert cfg["data"]["split"]["seed"] == 7


def test_dvc_hydra_composition_is_enabled():
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / ".dvc" / "config")
    assert parser.get("hydra", "enabled").strip().lower() == "true"


def test_stage_params_reads_sections_and_names_missing_ones(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "profile": "x", "train": {"epochs": 2}}))
    assert stage_params("train", path=path) == {"train": {"epochs": 2}, "seed": 1, "profile": "x"}
    with pytest.raises(KeyError, match="data"):
        stage_params("data", path=path)


def test_flatten_gives_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_the_class_list_is_defined_once():
    """skindx.inference.classes is the class list; the config and the ROC plots follow it."""
    from skindx.inference import CLASS_CODES, CLASS_INFO

    assert CLASS_CODES == tuple(CLASS_INFO) and len(CLASS_CODES) == 7
    for profile in PROFILES:
        cfg = compose_config([f"experiment={profile}"], conf_dir=REPO_ROOT / "conf")
        assert tuple(cfg["data"]["classes"]) == CLASS_CODES, profile
        assert cfg["model"]["num_classes"] == len(CLASS_CODES), profile
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    roc = next(p["roc"] for p in dvc["plots"] if isinstance(p, dict) and "roc" in p)
    assert [Path(f).stem for f in roc["y"]] == list(CLASS_CODES)


def test_every_pipeline_path_comes_from_the_paths_group():
    """dvc.yaml names no path of its own: every out, metric, plot and data dep is a
    ${paths.…} template (only the code deps, which are not pipeline data, are literal)."""
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                assert path.startswith("${paths."), f"{name}.{key}: {path}"
        for dep in stage["deps"]:
            # serving/: ingest's feedback source reads the prediction log with serving.predlog
            code = ("src/", "pipelines/", "serving/")
            assert dep.startswith(("${paths.", *code)), f"{name}.deps: {dep}"
    paths = ProjectPaths.from_params(load_params(REPO_ROOT / "params.yaml"))
    assert paths.processed_dir == Path("data/processed")
    assert load_params(REPO_ROOT / "params.yaml")["mlflow"]["tracking_uri"] == (
        f"sqlite:///{paths.mlflow_db}"
    )


def test_no_pipeline_output_is_left_out_of_the_cache():
    """`cache: false` keeps a stage out of DVC's run cache and its file out of `dvc push`: a
    clone that pulls would see that stage as changed and rerun it (tests/test_dvc_remote.py
    found reports/ood.json so)."""
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                if isinstance(entry, dict):
                    path, options = next(iter(entry.items()))
                    assert (options or {}).get("cache", True), f"{name}.{key}: {path}"


def test_a_changed_path_reaches_every_section_that_names_it():
    cfg = compose_config(
        ["paths.candidate_dir=out/cand", "paths.serving_model_dir=out/serve"],
        conf_dir=REPO_ROOT / "conf",
    )
    assert ProjectPaths.from_params(cfg).candidate_dir == Path("out/cand")
    assert cfg["package"]["out_dir"] == "out/cand"  # promote reads the candidate from here
    assert cfg["promote"]["serving_dir"] == "out/serve"


def test_missing_paths_say_to_recompose_params():
    with pytest.raises(KeyError, match="make params"):
        ProjectPaths.from_params({"paths": {"raw_dir": "data/raw"}})
