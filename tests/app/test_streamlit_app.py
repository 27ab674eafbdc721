"""The Streamlit script itself, run by Streamlit's AppTest against a real API (or none)."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP_DIR

pytestmark = pytest.mark.slow
SCRIPT = str(APP_DIR / "streamlit_app.py")


def open_app(monkeypatch, api_url: str) -> AppTest:
    monkeypatch.setenv("API_URL", api_url)
    return AppTest.from_file(SCRIPT, default_timeout=60).run()


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def image_captions(at: AppTest) -> list[str]:
    return [img.proto.imgs[0].caption for img in at.get("image")]


def test_upload_and_analyze_shows_card_chart_and_gradcam(monkeypatch, api_server, fullres_images):
    image = fullres_images[0]
    expected = (  # as the UI asks: its orientation toggle starts on
        api_server.client()
        .post(
            "/predict",
            files={"file": (image.name, image.read_bytes(), "image/jpeg")},
            params={"tta": "true"},
        )
        .json()
    )

    at = open_app(monkeypatch, api_server.url)
    assert not at.exception
    assert "Not a medical device" in at.warning[0].value
    assert at.info[0].value == "Upload an image to begin."

    at.file_uploader[0].set_value((image.name, image.read_bytes(), "image/jpeg")).run()
    assert image_captions(at) == [image.name]  # the preview
    at.button[0].click().run()

    assert not at.exception and not at.error
    assert at.subheader[0].value.endswith(expected["predicted_name"])
    assert f"`{expected['predicted_class']}`" in at.caption[0].value
    assert at.metric[0].value == f"{expected['confidence'] * 100:.1f} %"
    assert f"{expected['urgency']} urgency" in markdown_text(at)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(chart["data"][0]["y"]) == 7
    captions = image_captions(at)
    assert "Your image, as the model sees it" in captions
    assert any(c.startswith("Grad-CAM") for c in captions)
    # the sidebar shows the served model and its test metrics
    assert "test-1" in "\n".join(m.value for m in at.sidebar.markdown)
    assert any(t.value is not None for t in at.sidebar.table)


def test_the_orientation_toggle_asks_the_api_for_tta(monkeypatch, api_server, fullres_images):
    image = fullres_images[0]
    expected = (
        api_server.client()
        .post(
            "/predict",
            params={"tta": "true"},
            files={"file": (image.name, image.read_bytes(), "image/jpeg")},
        )
        .json()
    )
    at = open_app(monkeypatch, api_server.url)
    at.file_uploader[0].set_value((image.name, image.read_bytes(), "image/jpeg")).run()
    assert at.toggle[0].value is True  # on in the UI, though the API's default is off
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert any("averaged over 8 orientations" in c.value for c in at.caption)
    assert at.metric[0].value == f"{expected['confidence'] * 100:.1f} %"
    at.toggle[0].set_value(False).run()
    at.button[0].click().run()
    assert not any("orientations" in c.value for c in at.caption)

    monkeypatch.setenv("UI_TTA", "false")
    at = open_app(monkeypatch, api_server.url)
    at.file_uploader[0].set_value((image.name, image.read_bytes(), "image/jpeg")).run()
    assert at.toggle[0].value is False


def test_a_rejected_file_shows_the_apis_message(monkeypatch, api_server):
    api_detail = (
        api_server.client()
        .post(
            "/explain", files={"file": ("notes.jpg", b"plain text, not an image\n", "image/jpeg")}
        )
        .json()["detail"]
    )

    at = open_app(monkeypatch, api_server.url)
    at.file_uploader[0].set_value(("notes.jpg", b"plain text, not an image\n", "image/jpeg")).run()
    assert "notes.jpg cannot be shown as an image" in at.warning[1].value
    at.button[0].click().run()

    assert [e.value for e in at.error] == [f"The image was rejected: {api_detail}"]
    assert not at.subheader or at.subheader[0].value == "Test metrics"


def test_api_down_is_explained_in_the_sidebar_and_on_analyze(
    monkeypatch, closed_port_url, fullres_images
):
    at = open_app(monkeypatch, closed_port_url)
    assert "not reachable" in at.sidebar.error[0].value
    image = fullres_images[0]
    at.file_uploader[0].set_value((image.name, image.read_bytes(), "image/jpeg")).run()
    at.button[0].click().run()
    main_errors = [e.value for e in at.main.error]
    assert any("analysis service is unavailable" in e and "try again" in e for e in main_errors)


def blank_screenshot_png() -> bytes:
    import io

    from skindx.export.ood import flat_colours

    buffer = io.BytesIO()
    flat_colours()["flat_screenshot_blank"].save(buffer, format="PNG")
    return buffer.getvalue()


def test_out_of_distribution_and_uncertain_answers_are_shown_as_such(
    monkeypatch, ood_package_dir, fullres_images, tmp_path
):
    """A blank screenshot the scorer rejects gets a warning in place of the diagnosis (flag and
    reject alike); an uncertain answer is neutral, never a green benign check."""
    from tests.helpers.ood import with_ood_threshold
    from tests.serving.conftest import run_server

    blank = blank_screenshot_png()
    with run_server(tmp_path / "probe", model_dir=ood_package_dir) as server:
        score = server.client().post("/predict", files={"file": ("b.png", blank)}).json()
    package = with_ood_threshold(ood_package_dir, tmp_path / "pkg", score["ood_score"] - 1e-3)
    for action in ("flag", "reject"):
        with run_server(tmp_path / action, model_dir=package, ood_action=action) as server:
            at = open_app(monkeypatch, server.url)
            at.file_uploader[0].set_value(("blank.png", blank, "image/png")).run()
            at.button[0].click().run()
            assert not at.exception
            warnings = [w.value for w in at.warning]
            assert any("Not a dermatoscopic image" in w for w in warnings), (action, warnings)
            assert not [s for s in at.subheader if s.value != "Test metrics"]  # no diagnosis
            assert not at.get("plotly_chart")
    # uncertain: every confidence is below a threshold of 1.0
    import json as _json

    from skindx.export.card import write_card

    card = _json.loads((package / "model.json").read_text())
    card["ood"]["threshold"] = 1e9  # everything in distribution
    card["uncertainty"] = {"threshold": 1.0, "score": "calibrated top-1 probability"}
    write_card(card, package)
    image = fullres_images[0]
    with run_server(tmp_path / "uncertain", model_dir=package) as server:
        at = open_app(monkeypatch, server.url)
        at.file_uploader[0].set_value((image.name, image.read_bytes(), "image/jpeg")).run()
        at.button[0].click().run()
        assert not at.exception
        heading = [s.value for s in at.subheader if s.value != "Test metrics"][0]
        assert heading.endswith("Uncertain: see a dermatologist")
        assert "check_circle" not in heading and ":green[" not in markdown_text(at)
        assert "see a dermatologist" in markdown_text(at)
