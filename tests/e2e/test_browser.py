"""A real user in headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
upload, Analyze, read the result; and the two ways a wrong file is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import SCREENSHOT_DIR

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RESULT_TIMEOUT_S = 90


@pytest.fixture
def browser(tmp_path) -> Iterator[WebDriver]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: run `make system-deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,2300",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, timeout: float = RESULT_TIMEOUT_S) -> WebDriverWait:
    return WebDriverWait(driver, timeout)


def open_app(driver: WebDriver, url: str) -> None:
    driver.get(url)
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))


def upload(driver: WebDriver, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))


def click_analyze(driver: WebDriver) -> None:
    button = wait(driver).until(
        EC.element_to_be_clickable((By.XPATH, "//button[normalize-space(.)='Analyze']"))
    )
    button.click()


def result_heading(answer: dict) -> str:
    """XPath of the heading the UI shows for this API answer: app/presentation.py's verdict
    (the diagnosis, "Uncertain: see a dermatologist" below the confidence threshold, or the
    out-of-distribution warning), so the browser tests follow the UI's own rule."""
    import sys

    from tests.conftest import REPO_ROOT

    if str(REPO_ROOT / "app") not in sys.path:  # as tests/app/conftest.py: the UI's modules
        sys.path.insert(0, str(REPO_ROOT / "app"))
    from presentation import verdict

    shown = verdict(answer)
    if shown.kind == "out_of_distribution":
        return f"//strong[contains(., '{shown.title}')]"
    return f"//h3[contains(., '{shown.title}')]"


def text_of(driver: WebDriver, css: str) -> str:
    return "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))


def save_screenshot(driver: WebDriver, name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / name
    driver.save_screenshot(str(path))
    return path


def test_analyze_shows_prediction_chart_and_gradcam(stack, browser, fullres_images):
    image = fullres_images[0]
    with stack.client() as client:
        expected = client.post(  # as the UI asks: its orientation toggle starts on
            "predict",
            files={"file": (image.name, image.read_bytes(), "image/jpeg")},
            params={"tta": "true"},
        ).json()

    open_app(browser, stack.url)
    assert "Not a medical device" in browser.find_element(By.TAG_NAME, "body").text
    upload(browser, image)
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "img[alt='Preview']")))
    click_analyze(browser)

    # a full-resolution dermoscopy sample is in distribution: it gets its answer, chart and CAM
    assert expected["in_distribution"] is not False, expected
    try:
        wait(browser).until(EC.visibility_of_element_located((By.XPATH, result_heading(expected))))
        chart = wait(browser).until(
            EC.visibility_of_element_located((By.CSS_SELECTOR, ".js-plotly-plot"))
        )
        cam = wait(browser).until(
            EC.visibility_of_element_located((By.CSS_SELECTOR, "img[alt='Grad-CAM overlay']"))
        )
        wait(browser).until(lambda d: d.execute_script("return arguments[0].naturalWidth", cam) > 0)
    finally:
        shot = save_screenshot(browser, "analyze.png")

    assert f"class code {expected['predicted_class']}" in text_of(
        browser, "[data-testid=stCaptionContainer]"
    )
    bars = chart.find_elements(By.CSS_SELECTOR, ".bars .point")
    assert len(bars) == 7
    assert browser.find_element(By.CSS_SELECTOR, "img[alt='Uploaded image']").is_displayed()
    assert "test-1" in text_of(browser, "[data-testid=stSidebar]")  # model version from /model
    assert shot.stat().st_size > 10_000


def api_detail(stack, path: Path, content_type: str) -> str:
    with stack.client() as client:
        response = client.post(
            "predict", files={"file": (path.name, path.read_bytes(), content_type)}
        )
    assert response.status_code == 415, response.text
    return response.json()["detail"]


def analyze_and_read_error(driver: WebDriver, url: str, path: Path, screenshot: str) -> str:
    open_app(driver, url)
    upload(driver, path)
    wait(driver).until(
        EC.text_to_be_present_in_element((By.TAG_NAME, "body"), f"{path.name} cannot be shown")
    )
    click_analyze(driver)
    try:
        alert = wait(driver).until(
            EC.visibility_of_element_located(
                (By.XPATH, "//*[@data-testid='stAlertContentError'][contains(., 'rejected')]")
            )
        )
    finally:
        save_screenshot(driver, screenshot)
    assert not driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
    return alert.text.strip()


@pytest.mark.parametrize(
    "name, content_type", [("notes.txt", "text/plain"), ("notes.jpg", "image/jpeg")]
)
def test_a_text_file_is_refused_with_the_apis_message(stack, browser, tmp_path, name, content_type):
    """A text file, and one named .jpg: the API reads the bytes and the UI shows its words."""
    path = tmp_path / name
    path.write_text("these are notes, not a skin image\n")
    expected = api_detail(stack, path, content_type)
    shown = analyze_and_read_error(browser, stack.url, path, f"rejected-{path.suffix[1:]}.png")
    assert shown.endswith(f"The image was rejected: {expected}")


def test_mlflow_ui_renders_behind_the_proxy(stack, browser):
    """The MLflow single-page app loads its assets and calls its API under /mlflow/: an
    experiment created through the proxy's REST route shows up in the list the app fetched."""
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    with stack.client() as client:
        created = client.post("mlflow/api/2.0/mlflow/experiments/create", json={"name": name})
    assert created.status_code == 200, created.text[:500]
    experiment_id = created.json()["experiment_id"]

    browser.get(f"{stack.url}mlflow/")
    try:
        listed = wait(browser).until(
            EC.visibility_of_element_located((By.XPATH, f"//*[normalize-space(text())='{name}']"))
        )
    finally:
        save_screenshot(browser, "mlflow.png")
    assert listed.is_displayed()
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Default" in body  # the experiment every fresh store has, listed beside ours
    assert browser.current_url.startswith(f"{stack.url}mlflow/")  # the app stayed under /mlflow/
    listed.click()  # the experiment's own page, also fetched through /mlflow/ajax-api
    wait(browser).until(lambda d: experiment_id in d.current_url)
