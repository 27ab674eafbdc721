"""Every answer carries the package's out-of-distribution score; SKINDX_OOD_ACTION chooses
between flagging an upload out of distribution and refusing it with 422 not_dermoscopic."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skindx.inference.model import load_packaged_model
from skindx.inference.preprocessing import resize_to_contract
from tests.helpers.ood import with_ood_threshold
from tests.serving.conftest import in_process_api

pytestmark = pytest.mark.slow  # builds a package with its OOD scorer (~1-2 min here)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def uploads() -> dict[str, bytes]:
    from skindx.export.ood import flat_colours, noise_images

    return {
        "blank.png": png(flat_colours()["flat_screenshot_blank"]),
        "noise.png": png(noise_images()["noise_uniform"]),
    }


def score_of(package: Path, data: bytes) -> float:
    """The scorer applied directly to the upload as serving preprocesses it."""
    model = load_packaged_model(package)
    pixels = resize_to_contract(Image.open(io.BytesIO(data)).convert("RGB"), model.contract)
    return float(model.analyse(pixels[None]).ood_scores[0])


def post(api, path: str, name: str, data: bytes):
    return api.test_client.post(path, files={"file": (name, data, "image/png")})


def test_answers_carry_the_score_and_flag(ood_package_dir: Path, uploads, tmp_path: Path):
    blank = uploads["blank.png"]
    score = score_of(ood_package_dir, blank)
    # a threshold just below the blank's score: flagged, still answered (flag is the default)
    below = with_ood_threshold(ood_package_dir, tmp_path / "below", score - 1e-3)
    with in_process_api(model_dir=below) as api:
        for endpoint in ("/predict", "/explain"):
            body = post(api, endpoint, "blank.png", blank).json()
            assert body["ood_score"] == pytest.approx(score, abs=1e-4)
            assert body["in_distribution"] is False
            assert body["ood_threshold"] == pytest.approx(score - 1e-3)
            assert body["predicted_class"]  # flagged, not refused
        batch = api.test_client.post(
            "/predict/batch", files=[("files", (n, d, "image/png")) for n, d in uploads.items()]
        ).json()
        assert [r["status_code"] for r in batch["results"]] == [200, 200]
        assert batch["results"][0]["prediction"]["in_distribution"] is False
    # and just above it: in distribution
    above = with_ood_threshold(ood_package_dir, tmp_path / "above", score + 1e-3)
    with in_process_api(model_dir=above) as api:
        body = post(api, "/predict", "blank.png", blank).json()
        assert body["in_distribution"] is True


def test_reject_answers_422_not_dermoscopic_and_says_what_to_upload(
    ood_package_dir: Path, uploads, tmp_path: Path
):
    scores = {n: score_of(ood_package_dir, d) for n, d in uploads.items()}
    assert scores["blank.png"] != pytest.approx(scores["noise.png"])
    # a threshold between the two: one upload out, the other in
    low, high = sorted(scores.values())
    package = with_ood_threshold(ood_package_dir, tmp_path / "mid", (low + high) / 2)
    out_name = max(scores, key=scores.get)
    in_name = min(scores, key=scores.get)
    with in_process_api(model_dir=package, ood_action="reject") as api:
        for endpoint in ("/predict", "/explain"):
            response = post(api, endpoint, out_name, uploads[out_name])
            assert response.status_code == 422, response.text
            body = response.json()
            assert body["code"] == "not_dermoscopic"
            assert "dermatoscop" in body["detail"] and "Upload" in body["detail"]
        assert post(api, "/predict", in_name, uploads[in_name]).json()["in_distribution"] is True
        # in a batch only the rejected file fails; the other is answered
        batch = api.test_client.post(
            "/predict/batch", files=[("files", (n, uploads[n], "image/png")) for n in uploads]
        )
        assert batch.status_code == 200
        results = {r["filename"]: r for r in batch.json()["results"]}
        assert results[out_name]["status_code"] == 422
        assert results[out_name]["error"]["code"] == "not_dermoscopic"
        assert results[in_name]["prediction"]["in_distribution"] is True
        # a batch of rejected files only: the request fails with every reason
        only = api.test_client.post(
            "/predict/batch", files=[("files", (out_name, uploads[out_name], "image/png"))] * 2
        )
        assert only.status_code == 422 and only.json()["code"] == "not_dermoscopic"


def test_a_package_without_a_scorer_answers_null(packaged_model_dir: Path, uploads):
    with in_process_api(model_dir=packaged_model_dir, ood_action="reject") as api:
        body = post(api, "/predict", "blank.png", uploads["blank.png"]).json()
    assert body["ood_score"] is None and body["in_distribution"] is None
    assert body["ood_threshold"] is None


def test_the_prediction_log_records_the_score(ood_package_dir: Path, uploads, tmp_path):
    import sqlalchemy as sa

    db = tmp_path / "log.db"
    with in_process_api(model_dir=ood_package_dir, prediction_db=f"sqlite:///{db}") as api:
        body = post(api, "/predict", "blank.png", uploads["blank.png"]).json()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as con:
        rows = con.execute(sa.text("SELECT request_id, ood_score FROM predictions")).all()
    engine.dispose()
    assert [(r[0], round(r[1], 4)) for r in rows] == [
        (body["request_id"], round(body["ood_score"], 4))
    ]


def test_ood_action_setting_is_validated():
    from serving.settings import Settings, SettingsError

    assert Settings.from_env({}).ood_action == "flag"
    assert Settings.from_env({"SKINDX_OOD_ACTION": "REJECT"}).ood_action == "reject"
    with pytest.raises(SettingsError, match="SKINDX_OOD_ACTION"):
        Settings.from_env({"SKINDX_OOD_ACTION": "drop"})


def test_scores_are_finite(ood_package_dir: Path):
    model = load_packaged_model(ood_package_dir)
    out = model.analyse(np.zeros((2, 32, 32, 3), np.uint8))
    assert np.all(np.isfinite(out.ood_scores))
