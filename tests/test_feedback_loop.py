"""The loop closed on the quick profile: the served quick model answers real images (uploads
stored), a reviewer labels them through POST /feedback, and the next `dvc repro` with
data.feedback pointing at that prediction log trains on them: they are in the training split
only (validation and test are unchanged), and the model card and its MLflow run count them
and name the review window."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from skindx.config import ProjectPaths, load_params, write_params
from skindx.inference.classes import CLASS_CODES
from tests.conftest import run_dvc
from tests.serving.checks import post_image
from tests.serving.conftest import in_process_api

TOKEN = "loop-reviewer-token"


def split_ids(processed_dir: Path, split: str) -> list[str]:
    with (processed_dir / "splits" / f"{split}.csv").open(newline="") as fh:
        return [row["image_id"] for row in csv.DictReader(fh)]


def images_outside(ham_dir: Path, source: Path, n: int) -> list[Path]:
    """`n` real images, of different classes, from lesions the quick project never saw."""
    with (source / "HAM10000_metadata.csv").open(newline="") as fh:
        seen = {row["lesion_id"] for row in csv.DictReader(fh)}
    picks: dict[str, Path] = {}
    with (ham_dir / "HAM10000_metadata.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["lesion_id"] not in seen and row["dx"] not in picks:
                picks[row["dx"]] = ham_dir / "images" / f"{row['image_id']}.jpg"
            if len(picks) == n:
                return list(picks.values())
    raise AssertionError(f"fewer than {n} classes have unseen lesions in {ham_dir}")


@pytest.mark.slow  # one quick pipeline rerun from ingest to package
def test_reviewed_cases_reach_the_next_model(quick_project, ham_dir, small_source, tmp_path):
    project = quick_project.copy_to(tmp_path / "project")
    paths = ProjectPaths.from_params(load_params(project.path / "params.yaml"))
    before = {s: split_ids(project.path / paths.processed_dir, s) for s in ("val", "test")}
    run_dir = tmp_path / "api-run"

    new = images_outside(ham_dir, small_source, 3)
    known = sorted((small_source / "images").glob("*.jpg"))[0]  # in the training data already
    labelled = {}
    with in_process_api(
        model_dir=project.path / paths.candidate_dir,  # what promote serves
        run_dir=run_dir,
        store_uploads=True,
        reviewer_token=TOKEN,
    ) as api:
        for i, image in enumerate([*new, known]):
            answer = post_image(api, image.read_bytes())
            assert answer.status_code == 200, answer.text
            request_id = answer.json()["request_id"]
            label = CLASS_CODES[i]
            reviewed = api.test_client.post(
                "/feedback",
                json={"request_id": request_id, "label": label, "reviewer": "dr. loop"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert reviewed.status_code == 201, reviewed.text
            assert reviewed.json()["image_stored"] is True
            labelled[request_id] = label

    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["data"]["feedback"] = {
        "db": f"sqlite:///{run_dir / 'predictions.db'}",
        "uploads_dir": str(run_dir / "uploads"),
        "since": "2000-01-01",
        "until": None,
    }
    write_params(params, project.path / "params.yaml")
    result = run_dvc(project.path, "repro", "package", env=project.env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Running stage 'ingest'" in output  # the new data.feedback reran it
    assert "4 reviewed, 3 added to the training data (left out: 1 in_dataset)" in output

    raw = project.path / paths.raw_dir
    manifest = json.loads((raw / "manifest.json").read_text())
    with (raw / "metadata.csv").open(newline="") as fh:
        cases = [row for row in csv.DictReader(fh) if row["origin"] == "feedback"]
    assert {row["request_id"]: row["dx"] for row in cases} == {
        request_id: label for request_id, label in list(labelled.items())[:3]
    }
    assert {row["reviewer"] for row in cases} == {"dr. loop"}

    processed = project.path / paths.processed_dir
    case_ids = {row["image_id"] for row in cases}
    assert case_ids <= set(split_ids(processed, "train"))
    for split, ids in before.items():
        assert split_ids(processed, split) == ids  # the yardstick did not move
        assert not case_ids & set(ids)

    card = json.loads((project.path / paths.candidate_dir / "model.json").read_text())
    feedback = card["lineage"]["feedback"]
    assert feedback["n_cases"] == 3 == card["training_data"]["feedback_cases"]
    assert feedback["since"] == "2000-01-01T00:00:00+00:00"
    assert feedback["until"] == manifest["feedback"]["until"]
    assert feedback["until"] >= feedback["last_reviewed_at"] >= feedback["first_reviewed_at"]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=project.env["MLFLOW_TRACKING_URI"])
    tags = client.get_run(card["lineage"]["mlflow_run_id"]).data.tags
    assert tags["feedback_cases"] == "3"
    assert tags["feedback_window"] == f"[{feedback['since']}, {feedback['until']})"
