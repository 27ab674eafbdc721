"""A shared DVC remote (a local directory standing in for an NFS mount), for real: the Makefile's
`push`/`pull` targets, real `dvc`, and a fresh clone that serves the promoted model without
running a single stage.

The fast tests run the Makefile targets on a one-stage DVC project; the slow one pushes the
session's quick pipeline (`quick_project`) from clone A and pulls it into a fresh clone B.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, VENV_BIN, project_env, run_dvc
from tests.helpers.servers import free_port, start_server

VENV = VENV_BIN.parent
STAGES = ["ingest", "validate", "preprocess", "train", "evaluate", "package", "promote"]
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def make(project: Path, target: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The project's own Makefile target, with this venv (`-o install`: installed already)."""
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "install", f"VENV={VENV}", target],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def git(project: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=project, check=True, capture_output=True)


def dvc_config(path: Path) -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(path)
    return config


def toy_project(dest: Path) -> Path:
    """A git + DVC project with the repository's Makefile and one cached stage, run once."""
    dest.mkdir(parents=True)
    (dest / "Makefile").write_text((REPO_ROOT / "Makefile").read_text())
    (dest / "make_out.py").write_text(
        "from pathlib import Path\nPath('out').mkdir(exist_ok=True)\n"
        "Path('out/result.txt').write_text('made by the stage')\n"
    )
    (dest / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: python make_out.py\n    deps: [make_out.py]\n    outs: [out]\n"
    )
    (dest / ".gitignore").write_text("/out\n")
    git(dest, "init", "-q")
    run_dvc(dest, "init", "-q", env=project_env(dest))
    repro = run_dvc(dest, "repro", env=project_env(dest))
    assert repro.returncode == 0, repro.stderr
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "toy")
    return dest


def test_the_repository_has_no_default_remote():
    """A clone pushes nowhere until someone chooses a remote (SKINDX_DVC_REMOTE, dvc remote)."""
    config = dvc_config(REPO_ROOT / ".dvc" / "config")
    assert not config.has_option("core", "remote")
    assert not [s for s in config.sections() if s.startswith("'remote")]


@pytest.mark.slow
def test_push_and_pull_without_a_remote_say_what_to_set(tmp_path):
    project = toy_project(tmp_path / "p")
    env = project_env(project)
    env.pop("SKINDX_DVC_REMOTE", None)
    for target in ("push", "pull"):
        result = make(project, target, env)
        assert result.returncode != 0
        assert f"{target}: no DVC remote. Set SKINDX_DVC_REMOTE=" in result.stderr
        assert "dvc remote add -d" in result.stderr


@pytest.mark.slow
def test_skindx_dvc_remote_is_a_local_default_that_push_and_pull_use(tmp_path):
    project = toy_project(tmp_path / "a")
    remote = tmp_path / "remote"
    committed = (project / ".dvc" / "config").read_text()
    env = {**project_env(project), "SKINDX_DVC_REMOTE": str(remote)}
    push = make(project, "push", env)
    assert push.returncode == 0, push.stdout + push.stderr
    assert "dvc push --run-cache" in push.stdout
    local = dvc_config(project / ".dvc" / "config.local")
    assert local.get("core", "remote") == "skindx"
    assert local.get("'remote \"skindx\"'", "url") == str(remote)
    assert (project / ".dvc" / "config").read_text() == committed  # nothing to commit
    assert list((remote / "files" / "md5").rglob("*")), "nothing reached the remote"
    assert list((remote / "runs").rglob("*")), "the run cache did not reach the remote"

    clone = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    assert not (clone / "out").exists()
    clone_env = {**project_env(clone), "SKINDX_DVC_REMOTE": str(remote)}
    pull = make(clone, "pull", clone_env)
    assert pull.returncode == 0, pull.stdout + pull.stderr
    assert (clone / "out" / "result.txt").read_text() == "made by the stage"

    # a remote set with `dvc remote add -d` (no SKINDX_DVC_REMOTE) is used as it is
    other = tmp_path / "other-remote"
    run_dvc(clone, "remote", "add", "--local", "-f", "-d", "team", str(other), env=clone_env)
    clone_env.pop("SKINDX_DVC_REMOTE")
    again = make(clone, "push", clone_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert list((other / "files" / "md5").rglob("*"))


def _served_card(project: Path, tmp_path: Path, name: str) -> dict:
    """Start the real API (`python -m serving`) on `project`'s serving/model; GET /model."""
    port = free_port()
    env = {
        **project_env(project),
        "SKINDX_MODEL_DIR": str(project / "serving" / "model"),
        "SKINDX_HOST": "127.0.0.1",
        "SKINDX_PORT": str(port),
    }
    with start_server(
        [sys.executable, "-m", "serving"],
        f"http://127.0.0.1:{port}",
        tmp_path / f"{name}.log",
        ready_path="/ready",  # a verified model is loaded
        cwd=project,
        env=env,
        timeout=120,
    ) as server:
        response = httpx.get(f"{server.url}/model", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_a_fresh_clone_pulls_the_promoted_model_instead_of_training(quick_project, tmp_path):
    """Clone A ran the quick pipeline and pushes; clone B (git clone, no outputs, no data, an
    empty MLflow store) pulls: nothing is out of date, no stage runs, and B's API serves the
    model card A promoted."""
    a = quick_project.copy_to(tmp_path / "a")
    remote = tmp_path / "remote"
    git(a.path, "add", "dvc.lock")  # what a team commits after `dvc repro`
    git(a.path, "commit", "-q", "-m", "pipeline outputs")
    push = make(a.path, "push", {**a.env, "SKINDX_DVC_REMOTE": str(remote)})
    assert push.returncode == 0, push.stdout + push.stderr

    b = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", str(a.path), str(b)], check=True)
    for output in ("data/raw", "models", "reports", "serving/model", ".dvc/cache"):
        assert not (b / output).exists(), output
    env = {**project_env(b), "SKINDX_DVC_REMOTE": str(remote)}  # no SKINDX_DATA_DIR
    pull = make(b, "pull", env)
    assert pull.returncode == 0, pull.stdout + pull.stderr

    status = run_dvc(b, "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "Data and pipelines are up to date." in status.stdout, status.stdout
    repro = run_dvc(b, "repro", env=env)  # what `make run` does after pulling
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert "Running stage" not in repro.stdout, repro.stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in repro.stdout, repro.stdout
    assert not (b / "mlflow.db").exists()  # train, evaluate and package would have logged

    for rel in ("serving/model/model.json", "reports/metrics.json", "reports/promotions.jsonl"):
        assert (b / rel).read_bytes() == (a.path / rel).read_bytes(), rel
    card_a = json.loads((a.path / "serving" / "model" / "model.json").read_text())
    served_b = _served_card(b, tmp_path, "api-b")
    served_a = _served_card(a.path, tmp_path, "api-a")
    assert served_b["card_sha256"] == served_a["card_sha256"] == card_a["card_sha256"]
    assert served_b["version"] == served_a["version"]
