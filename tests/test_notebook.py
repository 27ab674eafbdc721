"""notebooks/explore.ipynb: committed without outputs, and it runs (papermill, a real Jupyter
kernel) on the outputs and the MLflow store of the quick pipeline."""

from __future__ import annotations

import json
import subprocess

import nbformat
import pytest

from tests.conftest import REPO_ROOT, VENV_BIN

NOTEBOOK = REPO_ROOT / "notebooks" / "explore.ipynb"


def test_the_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code"
    for index, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"code cell {index} has outputs: strip them (`.venv/bin/nbstripout "
            "notebooks/explore.ipynb`) before committing"
        )
    # nbstripout's own check, the tool that strips it (`nbstripout --install` does it on commit)
    verify = subprocess.run(
        [str(VENV_BIN / "nbstripout"), "--verify", str(NOTEBOOK)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr + " (run nbstripout on it)"
    # papermill's parameters cell: the project folder can be given from outside
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "project_dir" in code[0].source


def outputs_of(nb) -> tuple[str, int]:
    """All text the executed notebook printed or displayed, and how many images it drew."""
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                images += "image/png" in out.data
                texts.append(out.data.get("text/plain", ""))
    return "\n".join(texts), images


@pytest.mark.slow
def test_the_notebook_runs_on_the_quick_pipelines_outputs(quick_project, tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("MLFLOW_TRACKING_URI", quick_project.env["MLFLOW_TRACKING_URI"])
    monkeypatch.delenv("SKINDX_PROJECT_DIR", raising=False)
    executed = tmp_path / "explore.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters={"project_dir": str(quick_project.path), "n_errors": 3},
        cwd=str(NOTEBOOK.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    text, images = outputs_of(nbformat.read(executed, as_version=4))
    # class/lesion bars, samples, split bars, curves, confusion matrix, worst errors
    assert images == 6, text
    assert "profile 'quick'" in text
    run_id = json.loads((quick_project.path / "models" / "train" / "run.json").read_text())
    assert f"MLflow run {run_id['run_id']}" in text
    assert "lesions in more than one split: 0" in text
    assert "val_balanced_accuracy" in text and "balanced accuracy (mean recall)" in text
    assert "agrees with the evaluate stage's predictions" in text
    # the notebook was not run where it lives: the committed copy stays clean
    test_the_committed_notebook_has_no_outputs()
