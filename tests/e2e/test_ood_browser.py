"""Out-of-distribution uploads in the real UI, in headless Chromium: the blank screenshot and
scikit-image's everyday photographs get the "Not a dermatoscopic image" warning in place of a
diagnosis (no chart), while a full-resolution dermoscopy sample still gets its diagnosis.

The UI (`streamlit run app/streamlit_app.py`) talks to a real API (uvicorn) on 127.0.0.1.

    SKINDX_OOD_UI_MODEL=models/candidate pytest tests/e2e/test_ood_browser.py

runs it on that package as packaged, with its own threshold: that is how the demo model's
scores and non-dermoscopy screenshots in docs/results/demo-seeds/ood-ui/ were taken (the
screenshots of HAM10000 originals stay in reports/e2e/ood-ui/: the dataset is not committed).
Without the variable (CI) the model is the untrained test network, whose scorer is not what is
under test, so each case gets a copy of the package with the threshold moved just past that
image's own score: the model's separation is then not under test (tests/export/test_ood_package.py and reports/ood.json hold
it), the UI's answer to the API's flag is.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.conftest import REPO_ROOT
from tests.e2e.test_browser import (  # noqa: F401 (browser: the headless Chromium fixture)
    SCREENSHOT_DIR,
    browser,
    click_analyze,
    open_app,
    result_heading,
    upload,
    wait,
)
from tests.helpers.ood import with_ood_threshold
from tests.helpers.servers import free_port, start_server
from tests.serving.conftest import ood_package_dir, run_server  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # the ones the issue names
FULLRES_SAMPLES = 3  # the first full-resolution originals, by name
MODEL_ENV = "SKINDX_OOD_UI_MODEL"


@pytest.fixture(scope="module")
def cases(fullres_images, tmp_path_factory) -> dict[str, tuple[Path, bool]]:
    """name -> (image file, whether it is a dermoscopy image)."""
    from skindx.export.ood import flat_colours, skimage_photos

    folder = tmp_path_factory.mktemp("ood-ui-images")
    found = {}
    blank = folder / "blank-screenshot.png"
    flat_colours()["flat_screenshot_blank"].save(blank, format="PNG")
    found["blank-screenshot"] = (blank, False)
    photos = skimage_photos()
    for name in PHOTOS:
        path = folder / f"{name}.jpg"
        photos[name].save(path, format="JPEG", quality=92)
        found[name] = (path, False)
    for sample in fullres_images[:FULLRES_SAMPLES]:
        found[f"fullres-{sample.stem}"] = (sample, True)
    # a drawn lesion (no dataset pixels): its screenshot is the README's picture of the UI
    from tests.serving.hostile_corpus import synthetic_jpeg

    drawn = folder / "synthetic-lesion.jpg"
    drawn.write_bytes(synthetic_jpeg(3))
    found["synthetic-lesion"] = (drawn, True)
    return found


@pytest.fixture(scope="module")
def model_dir(request) -> tuple[Path, bool]:
    """(the package, whether it is served as packaged)."""
    chosen = os.environ.get(MODEL_ENV)
    if chosen:
        path = Path(chosen).resolve()
        if not (path / "model.json").is_file():
            pytest.fail(f"{MODEL_ENV}={chosen} is not a package (no model.json)")
        return path, True
    return request.getfixturevalue("ood_package_dir"), False


@pytest.fixture
def ui(tmp_path) -> Iterator:
    """ui(model) -> the Streamlit URL of a UI on an API serving `model` (a context manager)."""
    import contextlib

    @contextlib.contextmanager
    def started(model: Path, name: str):
        with run_server(tmp_path / f"api-{name}", model_dir=model) as api:
            port = free_port()
            command = [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "streamlit_app.py",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
            ]
            url = f"http://127.0.0.1:{port}"
            with start_server(
                command,
                url,
                tmp_path / f"ui-{name}.log",
                ready_path="/_stcore/health",
                cwd=REPO_ROOT / "app",
                extra_env={"API_URL": api.url},
            ):
                yield api, url

    return started


def score(api, image: Path) -> dict:
    """The API's answer as the UI asks for it (the orientation toggle starts on: ?tta=true)."""
    with api.client() as client:
        response = client.post(
            "/predict", files={"file": (image.name, image.read_bytes())}, params={"tta": "true"}
        )
    assert response.status_code == 200, response.text
    return response.json()


def verdict_title(answer: dict) -> str:
    if str(REPO_ROOT / "app") not in sys.path:  # the UI's own modules (not a package)
        sys.path.insert(0, str(REPO_ROOT / "app"))
    from presentation import verdict

    return verdict(answer).title


def shot_dir() -> Path:
    folder = SCREENSHOT_DIR / "ood-ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_non_dermoscopy_uploads_get_the_warning_and_a_sample_its_diagnosis(
    browser,  # noqa: F811
    ui,
    cases,
    model_dir,
    tmp_path,
):
    package, as_packaged = model_dir
    answers: dict[str, dict] = {}
    if not as_packaged:  # each case on a copy whose threshold sits just past its own score
        with run_server(tmp_path / "probe", model_dir=package) as api:
            raw = {name: score(api, path)["ood_score"] for name, (path, _) in cases.items()}
        packages = {
            name: with_ood_threshold(
                package,
                tmp_path / f"pkg-{name}",
                raw[name] + (1e-3 if dermoscopy else -1e-3),
            )
            for name, (_, dermoscopy) in cases.items()
        }
    else:
        packages = dict.fromkeys(cases, package)
    for name, (path, dermoscopy) in cases.items():
        with ui(packages[name], name) as (api, url):
            answer = answers[name] = score(api, path)
            assert answer["in_distribution"] is dermoscopy, (name, answer["ood_score"])
            open_app(browser, url)
            upload(browser, path)
            click_analyze(browser)
            try:
                heading = wait(browser).until(
                    EC.visibility_of_element_located((By.XPATH, result_heading(answer)))
                )
                if dermoscopy:  # the answer's chart, as for any diagnosis
                    wait(browser).until(
                        EC.visibility_of_element_located((By.CSS_SELECTOR, ".js-plotly-plot"))
                    )
            finally:
                browser.save_screenshot(str(shot_dir() / f"{name}.png"))
            body = browser.find_element(By.TAG_NAME, "body").text
            if dermoscopy:  # its diagnosis (or, below the confidence threshold, "Uncertain")
                assert "Not a dermatoscopic image" not in body
            else:
                assert "Not a dermatoscopic image" in heading.text
                assert "Upload a dermatoscope photograph" in body  # what to upload instead
                assert not browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
    summary = {
        "model": str(package) if as_packaged else "untrained test package, thresholds moved",
        "model_version": next(iter(answers.values())).get("model_version"),
        "as_packaged": as_packaged,
        "cases": {
            name: {
                "ood_score": round(a["ood_score"], 3),
                "ood_threshold": round(a["ood_threshold"], 3),
                "in_distribution": a["in_distribution"],
                "shown": verdict_title(a),
            }
            for name, a in answers.items()
        },
    }
    (shot_dir() / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
