"""A package with the monitor's reference, and an API that logs into a database the test reads.

The package is built the way the package stage builds one (build_package with predictions.csv
and reference.csv as extra files, sealed by the card), from the untrained test model at 32 px
and real test-split images (the synthetic HAM set on a fresh clone, the real one when
../shared holds it): its predictions.csv holds that model's real predictions on those images.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import (
    PACKAGE_INPUT_SIZE,
    default_paths,
    make_processed_dir,
    make_untrained_model,
)

REVIEWER_TOKEN = "test-reviewer-token"
TEST_PER_CLASS = 10  # 70 test images: enough for the drift tests, quick to post


@dataclass(frozen=True)
class MonitorPackage:
    model_dir: Path
    processed_dir: Path
    images: np.ndarray  # the test split (uint8 N×32×32×3), as the reference saw it
    dx: list[str]  # true class codes, in array order


@pytest.fixture(scope="session")
def monitor_package(ham_dir: Path, tmp_path_factory) -> MonitorPackage:
    from skindx.config import ProjectPaths
    from skindx.evaluation.predictions import read_split_table, write_predictions
    from skindx.export.package import build_package
    from skindx.export.stage import reference_file
    from skindx.inference import CLASS_CODES, PreprocessingContract, load_packaged_model

    root = tmp_path_factory.mktemp("monitor")
    processed = make_processed_dir(
        ham_dir,
        root / "processed",
        size=PACKAGE_INPUT_SIZE,
        per_split={"train": 1, "val": 1, "test": TEST_PER_CLASS},
    )
    contract = PreprocessingContract(input_size=PACKAGE_INPUT_SIZE)
    images = np.load(processed / "test_images.npy")
    labels = np.load(processed / "test_labels.npy")
    rows = read_split_table(processed, "test")
    first = build_package(make_untrained_model(), contract, root / "first", version="monitor-1")
    probs, _ = load_packaged_model(first).predict(images)
    predictions = write_predictions(
        root / "extra" / "predictions.csv",
        image_ids=[r["image_id"] for r in rows],
        lesion_ids=[r["lesion_id"] for r in rows],
        labels=labels,
        probs=probs,
        classes=CLASS_CODES,
    )
    paths = ProjectPaths.from_params({**default_paths(), "processed_dir": str(processed)})
    reference = reference_file(paths, root / "extra")
    model_dir = build_package(
        make_untrained_model(),
        contract,
        root / "model",
        temperature=1.0,
        metrics={"balanced_accuracy": 0.5},
        version="monitor-1",
        name="skindx-resnet50",
        extra_files=[predictions, reference],
    )
    return MonitorPackage(model_dir, processed, images, [CLASS_CODES[i] for i in labels])


def png(pixels: np.ndarray) -> bytes:
    """Lossless, so that the API's statistics are those of exactly these pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class LoggingApi:
    api: object  # tests.serving.conftest.InProcessApi
    db: str

    def predict(self, pixels: np.ndarray) -> dict:
        response = self.api.test_client.post(
            "/predict", files={"file": ("x.png", png(pixels), "image/png")}
        )
        assert response.status_code == 200, response.text
        return response.json()

    def label(self, request_id: str, label: str) -> None:
        response = self.api.test_client.post(
            "/feedback",
            json={"request_id": request_id, "label": label, "reviewer": "test"},
            headers={"Authorization": f"Bearer {REVIEWER_TOKEN}"},
        )
        assert response.status_code == 201, response.text

    def flush(self) -> None:
        assert self.api.app.state.prediction_log.flush(30), "the log writer did not catch up"


@contextlib.contextmanager
def logging_api(model_dir: Path, tmp_path: Path) -> Iterator[LoggingApi]:
    """The real API (in-process) with its real prediction log in a SQLite file of tmp_path."""
    from tests.serving.conftest import in_process_api

    db = f"sqlite:///{tmp_path / 'predictions.db'}"
    with in_process_api(
        model_dir=model_dir, prediction_db=db, reviewer_token=REVIEWER_TOKEN
    ) as api:
        yield LoggingApi(api, db)
