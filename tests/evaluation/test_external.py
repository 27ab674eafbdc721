"""External validation (skindx.evaluation.external): a labelled folder that the test writes, in
each layout ingest recognises, scored by the packaged test model locally and through the real
API, with images of the model's own data left out and counted."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from skindx.data.errors import SourceError
from skindx.data.sources import read_labelled_folder
from skindx.evaluation.external import (
    ApiScorer,
    KnownImages,
    PackageScorer,
    evaluate_folder,
    flat_metrics,
    run_external,
    select_images,
)
from skindx.inference.classes import CLASS_CODES
from skindx.inference.hashing import sha256_file
from tests.conftest import REPO_ROOT

ONEHOT_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")  # ISIC 2019
ISIC_COLUMN = {"akiec": "AK"}


@dataclass(frozen=True)
class Item:
    image_id: str  # the id in the external folder
    dx: str  # the label as the folder writes it
    source: Path | None  # the image's bytes (None: a truncated JPEG)
    lesion_id: str | None = None


@dataclass(frozen=True)
class ExternalSet:
    items: list[Item]
    processed_dir: Path  # splits/*.csv: the model's own images
    raw_dir: Path  # metadata.csv with their sha256
    scored: int  # images that reach the model and are answered
    in_training: dict[str, int]  # by reason
    truncated: Path


@pytest.fixture(scope="module")
def external_set(fullres_dir: Path, tmp_path_factory) -> ExternalSet:
    """21 images: 14 renamed to new ids (scored), 3 keeping ids that the model's train split
    lists, 1 renamed copy with the bytes of a training image, 1 truncated JPEG, 1 labelled SCC
    (not one of the seven), 1 listed without an image file... in the folder per class
    (no list) that last one does not exist, so it is left out of the counts compared."""
    with (fullres_dir / "HAM10000_metadata.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    by_class = {c: [r for r in rows if r["dx"] == c][:3] for c in CLASS_CODES}
    image = {r["image_id"]: fullres_dir / "images" / f"{r['image_id']}.jpg" for r in rows}
    items: list[Item] = []
    for n, code in enumerate(CLASS_CODES):
        first, second, third = by_class[code]
        items.append(Item(f"EXT_{2 * n:04d}", code, image[first["image_id"]]))
        items.append(Item(f"EXT_{2 * n + 1:04d}", code, image[second["image_id"]]))
        if code in ("mel", "nv", "bkl"):  # keeps its HAM id, which the train split lists
            items.append(Item(third["image_id"], code, image[third["image_id"]]))
    training_ids = [i.image_id for i in items if i.image_id.startswith("ISIC_")]
    items.append(Item("EXT_0100", "nv", image[training_ids[0]]))  # a renamed training image
    items.append(Item("EXT_0101", "mel", None))  # truncated
    items.append(Item("EXT_0102", "scc", image[by_class["bcc"][2]["image_id"]]))

    base = tmp_path_factory.mktemp("external-model-data")
    processed = base / "processed"
    (processed / "splits").mkdir(parents=True)
    with (processed / "splits" / "train.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "lesion_id", "dx", "label"])
        for image_id in training_ids:
            row = next(r for r in rows if r["image_id"] == image_id)
            writer.writerow([image_id, row["lesion_id"], row["dx"], CLASS_CODES.index(row["dx"])])
    raw = base / "raw"
    raw.mkdir()
    with (raw / "metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "sha256"])
        for image_id in training_ids:
            writer.writerow([image_id, sha256_file(image[image_id])])
    truncated = base / "truncated.jpg"
    truncated.write_bytes(image[training_ids[1]].read_bytes()[:2000])
    return ExternalSet(
        items=items,
        processed_dir=processed,
        raw_dir=raw,
        scored=14,
        in_training={"image_id": 3, "lesion_id": 0, "same_bytes": 1},
        truncated=truncated,
    )


def write_layout(layout: str, data: ExternalSet, dest: Path) -> Path:
    """The external set in one of the three layouts (images under a subfolder, as people
    unpack archives)."""
    dest.mkdir(parents=True)

    def put(item: Item, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.source or data.truncated, folder / f"{item.image_id}.jpg")

    if layout == "class-folders":
        for item in data.items:
            put(item, dest / item.dx)
        return dest
    images = dest / ("images" if layout == "ham-metadata" else "ISIC_2019_Training_Input")
    for item in data.items:
        put(item, images)
    if layout == "ham-metadata":
        with (dest / "HAM10000_metadata.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["lesion_id", "image_id", "dx"])
            writer.writerows([i.lesion_id or "", i.image_id, i.dx] for i in data.items)
    else:
        with (dest / "ISIC_2019_Training_GroundTruth.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", *ONEHOT_COLUMNS])
            for i in data.items:
                column = ISIC_COLUMN.get(i.dx, i.dx.upper())
                writer.writerow(
                    [i.image_id, *("1.0" if c == column else "0.0" for c in ONEHOT_COLUMNS)]
                )
    return dest


LAYOUTS = ("ham-metadata", "isic-onehot", "class-folders")


@pytest.fixture(scope="module")
def folders(external_set: ExternalSet, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("external-folders")
    return {layout: write_layout(layout, external_set, base / layout) for layout in LAYOUTS}


@pytest.fixture(scope="module")
def known(external_set: ExternalSet) -> KnownImages:
    known = KnownImages.from_project(external_set.processed_dir, external_set.raw_dir)
    assert known is not None
    return known


@pytest.fixture(scope="module")
def scorer(packaged_model_dir: Path) -> PackageScorer:
    return PackageScorer(packaged_model_dir, batch_size=8)


@pytest.fixture(scope="module")
def local_reports(folders, scorer, known, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("external-reports")
    return {
        layout: evaluate_folder(
            folder, scorer, known, predictions_path=out / f"{layout}.csv", progress=False
        )
        | {"_predictions": out / f"{layout}.csv"}
        for layout, folder in folders.items()
    }


def comparable(report: dict) -> dict:
    """The report without what names where it came from (folder, mode, model location)."""
    drop = {"folder", "mode", "model", "_predictions"}
    return {k: v for k, v in report.items() if k not in drop}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_recognised_with_the_same_labels(folders, external_set, layout):
    folder = read_labelled_folder(folders[layout])
    assert folder.layout == layout
    labels = dict(zip(folder.table["image_id"], folder.table["label"], strict=True))
    expected = {i.image_id: (None if i.dx == "scc" else i.dx) for i in external_set.items}
    assert labels == expected
    assert folder.table["source_path"].notna().all()


def test_the_report_counts_what_was_left_out_and_scores_the_rest(
    local_reports, external_set, packaged_model_dir
):
    report = local_reports["ham-metadata"]
    assert report["configured"] is True and report["mode"] == "package"
    assert report["n_images"] == external_set.scored
    excluded = report["excluded"]
    assert excluded["in_training_data"]["by"] == external_set.in_training
    assert excluded["in_training_data"]["by_split"] == {"train": 4, "val": 0, "test": 0}
    assert report["n_excluded_training"] == 4
    assert excluded["unknown_label"] == {"count": 1, "labels": {"scc": 1}}
    assert excluded["total"] == 5
    assert report["refused"] == {"corrupt_image": 1}
    assert report["classes_present"] == list(CLASS_CODES)
    card = json.loads((packaged_model_dir / "model.json").read_text())
    assert report["model"]["version"] == card["version"]
    # the out-of-distribution rate is there exactly when the package has a scorer
    assert (report["ood_rate"] is None) == (not card.get("ood"))

    # the metrics are those of the per-image answers written beside the report
    with report["_predictions"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(external_set.items)
    scored = [r for r in rows if r["status"] == "scored"]
    assert len(scored) == external_set.scored
    statuses = {r["image_id"]: r["status"] for r in rows}
    assert statuses["EXT_0100"] == "excluded:training_same_bytes"
    assert statuses["EXT_0101"] == "refused"
    assert statuses["EXT_0102"] == "excluded:unknown_label"
    correct = [r["predicted"] == r["label"] for r in scored]
    assert report["accuracy"] == pytest.approx(sum(correct) / len(correct))
    recalls = {}
    for code in CLASS_CODES:
        mine = [r for r in scored if r["label"] == code]
        recalls[code] = sum(r["predicted"] == code for r in mine) / len(mine)
        assert report["per_class"][code]["recall"] == pytest.approx(recalls[code])
        assert report["per_class"][code]["support"] == len(mine)
    assert report["balanced_accuracy"] == pytest.approx(sum(recalls.values()) / len(recalls))
    low, high = report["balanced_accuracy_ci_low"], report["balanced_accuracy_ci_high"]
    assert low <= report["balanced_accuracy"] <= high
    matrix = report["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == external_set.scored


def test_the_three_layouts_give_the_same_report(local_reports):
    reference = comparable(local_reports["ham-metadata"])
    for layout in LAYOUTS[1:]:
        assert comparable(local_reports[layout]) == reference, layout


def test_a_lesion_of_the_model_data_is_left_out_too(external_set, scorer, known, tmp_path):
    """HAM-style folders carry lesion ids: another image of a training lesion is no test."""
    train = (external_set.processed_dir / "splits" / "train.csv").read_text().splitlines()
    lesion = train[1].split(",")[1]
    items = [
        Item(i.image_id, i.dx, i.source, lesion if i.image_id == "EXT_0000" else f"L{n}")
        for n, i in enumerate(external_set.items)
    ]
    data = ExternalSet(**{**external_set.__dict__, "items": items})
    report = evaluate_folder(write_layout("ham-metadata", data, tmp_path / "f"), scorer, known)
    assert report["excluded"]["in_training_data"]["by"]["lesion_id"] == 1
    assert report["n_images"] == external_set.scored - 1
    assert report["bootstrap"]["method"].startswith("percentile, lesions")


def test_without_the_model_data_nothing_is_left_out_and_the_report_says_so(folders, scorer):
    report = evaluate_folder(folders["class-folders"], scorer, None, progress=False)
    assert report["excluded"]["in_training_data"] is None
    assert report["n_excluded_training"] is None
    assert report["n_images"] == 14 + 3 + 1  # the training ids and the renamed copy are scored


def test_a_folder_in_no_known_layout_says_what_is_expected(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(SourceError, match="folder per class named by its code"):
        read_labelled_folder(tmp_path)
    with pytest.raises(SourceError, match="does not exist"):
        read_labelled_folder(tmp_path / "missing")


def test_the_api_in_process_gives_the_same_report(
    local_reports, folders, known, packaged_model_dir
):
    """The same folder through the real app (TestClient: middleware, decoding, batching)."""
    from tests.serving.conftest import in_process_api

    with in_process_api(model_dir=packaged_model_dir, prediction_log="false") as api:
        scorer = ApiScorer("http://testserver", chunk=5, client=api.test_client)
        report = evaluate_folder(folders["isic-onehot"], scorer, known, progress=False)
    assert report["mode"] == "api"
    assert comparable(report) == comparable(local_reports["ham-metadata"])


@pytest.fixture(scope="module")
def ood_package(processed_dir: Path, folders, known, tmp_path_factory) -> Path:
    """A package with an out-of-distribution scorer (tests.helpers.ood, as the package stage
    fits it), its threshold moved to the median score of the 14 external images that get
    scored: exactly half of them are flagged."""
    import numpy as np

    from skindx.export.ood import flat_colours
    from tests.conftest import make_untrained_model
    from tests.helpers.ood import build_ood_package, with_ood_threshold

    base = tmp_path_factory.mktemp("external-ood")
    fitted = build_ood_package(
        processed_dir,
        base / "fitted" / "model",
        make_untrained_model(),
        probes={"flat_colours": flat_colours()},
    )
    labelled = read_labelled_folder(folders["ham-metadata"])
    table, _ = select_images(labelled, known)
    paths = [Path(p) for p in table.loc[table["status"] == "kept", "source_path"]]
    scores = [
        o.ood_score for o in PackageScorer(fitted).score(paths, progress=False) if o.predicted
    ]
    assert len(scores) == 14 and len(set(scores)) == 14
    return with_ood_threshold(fitted, base / "median" / "model", float(np.median(scores)))


@pytest.mark.slow
def test_the_ood_rate_is_the_packages_scorer_locally_and_through_the_api(
    ood_package, folders, known, tmp_path
):
    """Flagged images are scored and counted; with SKINDX_OOD_ACTION=reject the API refuses
    them as not_dermoscopic, and they count as out of distribution without a prediction."""
    from tests.serving.conftest import in_process_api

    local = evaluate_folder(
        folders["ham-metadata"],
        PackageScorer(ood_package),
        known,
        predictions_path=tmp_path / "p.csv",
        progress=False,
    )
    assert local["n_out_of_distribution"] == 7
    assert local["ood_rate"] == pytest.approx(0.5)
    with (tmp_path / "p.csv").open() as fh:
        scored = [r for r in csv.DictReader(fh) if r["status"] == "scored"]
    assert sum(r["in_distribution"] == "false" for r in scored) == 7
    assert all(r["ood_score"] for r in scored)

    with in_process_api(model_dir=ood_package, prediction_log="false") as api:
        scorer = ApiScorer("http://testserver", client=api.test_client)
        flagged = evaluate_folder(folders["class-folders"], scorer, known, progress=False)
    assert comparable(flagged) == comparable(local)

    with in_process_api(model_dir=ood_package, prediction_log="false", ood_action="reject") as api:
        scorer = ApiScorer("http://testserver", chunk=3, client=api.test_client)
        rejected = evaluate_folder(folders["isic-onehot"], scorer, known, progress=False)
    assert rejected["refused"] == {"corrupt_image": 1, "not_dermoscopic": 7}
    assert rejected["n_images"] == 7
    assert rejected["n_out_of_distribution"] == 7
    assert rejected["ood_rate"] == pytest.approx(0.5)


def test_mlflow_metrics_are_flat_and_named_external():
    report = {
        "configured": True,
        "n_images": 3,
        "balanced_accuracy": 0.5,
        "ood_rate": None,
        "per_class": {"mel": {"recall": 1.0, "support": 2, "recall_ci_low": None}},
    }
    assert flat_metrics(report) == {
        "external_n_images": 3.0,
        "external_balanced_accuracy": 0.5,
        "external_recall_mel": 1.0,
        "external_support_mel": 2.0,
    }
    assert flat_metrics({"configured": False}) == {}


def test_the_stage_without_a_folder_writes_a_report_saying_so(tmp_path, monkeypatch):
    from tests.conftest import default_paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    report = run_external({"evaluate": {"external": None}, "mlflow": {}, "paths": default_paths()})
    assert report["configured"] is False and "evaluate.external" in report["reason"]
    written = json.loads((tmp_path / default_paths()["external_report"]).read_text())
    assert written == report
    assert (tmp_path / default_paths()["external_predictions"]).read_text().startswith("image_id,")


def test_setting_evaluate_external_reruns_only_the_external_stage():
    """evaluate lists its params key by key so that evaluate.external does not rerun it; a new
    evaluate key must be added there (or it would not rerun evaluate either)."""
    from skindx.config import compose_config

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    evaluate_params = set(stages["evaluate"]["params"])
    keys = set(compose_config(conf_dir=REPO_ROOT / "conf")["evaluate"])
    assert evaluate_params == {f"evaluate.{k}" for k in keys - {"external"}}
    assert "evaluate.external" in stages["external"]["params"]
    assert "${paths.candidate_dir}" in stages["external"]["deps"]
    assert stages["external"]["metrics"] == ["${paths.external_report}"]


@pytest.mark.slow
def test_the_command_gives_the_same_report_against_a_real_api(
    folders, external_set, local_reports, packaged_model_dir, tmp_path
):
    """`python -m skindx.evaluation.external FOLDER --api URL` against uvicorn, and with
    --model: the same report as the library call (51 s, and 173 s at a load of 35, on 2 cores)."""
    from tests.helpers.servers import free_port, start_server

    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "serving.app:app", "--port", str(port)]
    settings = {
        "SKINDX_MODEL_DIR": str(packaged_model_dir),
        "SKINDX_PREDICTION_LOG": "false",
        "SKINDX_RUN_DIR": str(tmp_path / "run"),
        "SKINDX_MAX_BATCH_FILES": "4",  # the client halves its chunk of 16 until it fits
    }
    cli = [
        sys.executable,
        "-m",
        "skindx.evaluation.external",
        str(folders["class-folders"]),
        "--processed-dir",
        str(external_set.processed_dir),
        "--raw-dir",
        str(external_set.raw_dir),
        "--quiet",
    ]
    url = f"http://127.0.0.1:{port}"
    # generous start-up limits: the shared 2-core machine runs at a load of 30 at times
    with start_server(
        command, url, tmp_path / "uvicorn.log", cwd=REPO_ROOT, extra_env=settings, timeout=180
    ) as server:
        server.wait_for("/ready", timeout=180)
        api = subprocess.run(
            [*cli, "--api", url, "--out", str(tmp_path / "api.json")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert api.returncode == 0, api.stderr[-3000:]
    assert "balanced accuracy" in api.stdout and "left out 5" in api.stdout
    local = subprocess.run(
        [*cli, "--model", str(packaged_model_dir), "--out", str(tmp_path / "local.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    from_api = json.loads((tmp_path / "api.json").read_text())
    from_package = json.loads((tmp_path / "local.json").read_text())
    assert from_api["mode"] == "api" and from_api["model"]["location"] == url
    assert comparable(from_api) == comparable(from_package)
    assert comparable(from_api) == comparable(local_reports["ham-metadata"])

    down = subprocess.run([*cli, "--api", url], capture_output=True, text=True, timeout=120)
    assert down.returncode == 2 and "cannot reach the API" in down.stderr


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the session's quick pipeline (14 min on a loaded machine) comes first
def test_the_external_stage_in_the_quick_pipeline(quick_project, fullres_dir, tmp_path):
    """evaluate.external set on the quick pipeline: `dvc repro` reruns only the external stage,
    scores the candidate package, leaves out the images of the model's splits, writes the DVC
    metric and logs external_* metrics into the pipeline's MLflow run (the call: about 3 min on a
    loaded 2-core machine, most of it dvc checking the pipeline)."""
    import mlflow

    from tests.conftest import run_dvc

    project = quick_project.copy_to(tmp_path / "p")
    base = json.loads((project.path / "reports" / "external.json").read_text())
    assert base["configured"] is False  # the default pipeline ran it as a no-op

    train = list(csv.DictReader((project.path / "data/processed/splits/train.csv").open()))
    folder = tmp_path / "external"
    for row in train[:5]:  # five images the model trained on, under their own ids
        (folder / row["dx"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(
            project.path / "data/raw/images" / f"{row['image_id']}.jpg",
            folder / row["dx"] / f"{row['image_id']}.jpg",
        )
    known_ids = {
        r["image_id"]
        for s in ("train", "val", "test")
        for r in csv.DictReader((project.path / f"data/processed/splits/{s}.csv").open())
    }
    fresh = 0
    for path in sorted((fullres_dir / "images").glob("*.jpg"))[:12]:
        if path.stem in known_ids:
            continue
        dx = next(
            r["dx"]
            for r in csv.DictReader((fullres_dir / "HAM10000_metadata.csv").open())
            if r["image_id"] == path.stem
        )
        (folder / dx).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / dx / f"NEW_{fresh:03d}.jpg")
        fresh += 1

    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["evaluate"]["external"] = str(folder)
    (project.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_dvc(project.path, "repro", env=project.env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Running stage 'external'" in result.stdout
    for stage in ("train", "evaluate", "package", "promote"):
        assert f"Running stage '{stage}'" not in result.stdout, stage

    report = json.loads((project.path / "reports" / "external.json").read_text())
    assert report["configured"] is True
    assert report["n_images"] == fresh
    assert report["excluded"]["in_training_data"]["by_split"]["train"] == 5
    card = json.loads((project.path / "models/candidate/model.json").read_text())
    assert report["model"]["version"] == card["version"]
    # the package's out-of-distribution scorer flags what the predictions file says
    assert (report["ood_rate"] is None) == (not card.get("ood"))
    with (project.path / "reports" / "external_predictions.csv").open() as fh:
        scored = [r for r in csv.DictReader(fh) if r["status"] == "scored"]
    assert len(scored) == fresh
    if card.get("ood"):
        flagged = sum(r["in_distribution"] == "false" for r in scored)
        assert report["n_out_of_distribution"] == flagged
        assert report["ood_rate"] == pytest.approx(flagged / fresh)

    shown = run_dvc(project.path, "metrics", "show", "--json", env=project.env)
    assert shown.returncode == 0 and "external.json" in shown.stdout

    mlflow.set_tracking_uri(project.env["MLFLOW_TRACKING_URI"])
    run_id = json.loads((project.path / "models/train/run.json").read_text())["run_id"]
    logged = mlflow.get_run(run_id).data.metrics
    assert logged["external_n_images"] == fresh
    assert logged["external_balanced_accuracy"] == pytest.approx(report["balanced_accuracy"])
    assert logged["external_n_excluded_training"] == 5
