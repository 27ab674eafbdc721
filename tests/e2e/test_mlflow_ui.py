"""The MLflow UI as a team meets it, through `make serve`'s nginx: /mlflow/ opens the training
runs of the pipeline's experiment (not MLflow 3's GenAI traces overview) with the Dataset column
and the test balanced accuracy in the table, best run first, without a click."""

from __future__ import annotations

import os
import uuid

import mlflow
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from skindx import tracking
from skindx.inference.metrics import HEADLINE_METRICS, PRIMARY_METRIC
from tests.e2e.test_browser import browser, save_screenshot  # noqa: F401 (headless Chromium)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

EXPERIMENT = "skindx"  # conf/mlflow/default.yaml's mlflow.experiment; nginx's landing looks it up
UI_TIMEOUT_S = 90


def log_training_runs(stack, processed_dir, scores: dict[str, float]) -> dict[str, str]:
    """Runs as the train and evaluate stages log them (skindx.tracking: experiment, lineage
    tags, the processed splits as datasets, per-epoch and test metrics), written through the
    stack's MLflow server; returns run name -> run id."""
    os.environ["MLFLOW_TRACKING_URI"] = f"{stack.upstream('mlflow')}/mlflow"
    try:
        tracker = tracking.configure({"experiment": EXPERIMENT})
        ids = {}
        for name, score in scores.items():
            with tracker.start_run(run_name=name) as run:
                tracker.log_params({"train.lr": 0.001, "model.arch": "resnet18"})
                tracker.set_tags(tracking.lineage_tags("train", "quick"))
                tracking.log_split_datasets(tracker, processed_dir, "e2e0123456789abc")
                for epoch in (1, 2):
                    tracker.log_metrics({f"val_{PRIMARY_METRIC}": score * epoch / 2}, step=epoch)
                tracker.log_metrics({f"test_{m}": score for m in HEADLINE_METRICS})
                ids[name] = run.info.run_id
        return ids
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_mlflow_opens_on_the_training_runs_with_their_balanced_accuracy(
    stack,
    browser,  # noqa: F811
    processed_dir,
):
    tag = uuid.uuid4().hex[:6]
    scores = {f"quick-a-{tag}": 0.4321, f"quick-b-{tag}": 0.5678}
    log_training_runs(stack, processed_dir, scores)

    browser.get(f"{stack.url}mlflow/")
    try:

        def shown(driver) -> str | bool:
            text = driver.find_element(By.TAG_NAME, "body").text
            wanted = [*scores, *(f"{s:.4f}" for s in scores.values())]
            return text if all(w in text for w in wanted) else False

        body = WebDriverWait(browser, UI_TIMEOUT_S).until(shown)
    finally:
        save_screenshot(browser, "mlflow-runs.png")
    url = browser.current_url
    # the runs table of the pipeline's experiment, machine-learning view, headline columns
    assert "/runs" in url and "workflowType=machine_learning" in url, url
    assert f"viewStateShareKey={tracking.HEADLINE_VIEW}" in url, url
    assert "Run Name" in body and "Dataset" in body
    assert "ham10000-train" in body  # the Dataset column names the split each run used
    # best balanced accuracy first
    first, second = sorted(scores, key=scores.get, reverse=True)
    assert body.index(first) < body.index(second)
    # what the table shows is what the store holds
    client = mlflow.MlflowClient(tracking_uri=f"{stack.upstream('mlflow')}/mlflow")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert f"/experiments/{experiment.experiment_id}/runs" in url
    for run in client.search_runs([experiment.experiment_id]):
        if run.info.run_name in scores:
            value = run.data.metrics[f"test_{PRIMARY_METRIC}"]
            assert f"{value:.4f}" in body
