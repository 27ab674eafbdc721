"""The UI's HTTP client against a real uvicorn API on the packaged test model."""

from __future__ import annotations

import pytest
from api_client import ApiClient, ApiRejected, ApiUnavailable
from presentation import decode_png

pytestmark = pytest.mark.slow


def test_explain_returns_the_prediction_and_a_png_overlay(api_server, fullres_images):
    image = fullres_images[0]
    answer = ApiClient(api_server.url).explain(image.name, image.read_bytes(), "image/jpeg")
    assert answer["predicted_class"] == answer["explained_class"]
    assert len(answer["probabilities"]) == 7
    assert decode_png(answer["heatmap_png_base64"]).startswith(b"\x89PNG")


def test_predict_agrees_with_explain(api_server, fullres_images):
    client = ApiClient(api_server.url)
    data = fullres_images[1].read_bytes()
    assert (
        client.predict("a.jpg", data, "image/jpeg")["predicted_class"]
        == client.explain("a.jpg", data, "image/jpeg")["predicted_class"]
    )


def test_tta_is_the_servers_default_unless_the_caller_chooses(api_server, fullres_images):
    client = ApiClient(api_server.url)
    data = fullres_images[2].read_bytes()
    assert client.model_card()["serving"]["tta"] is False
    default = client.predict("a.jpg", data, "image/jpeg")
    plain = client.predict("a.jpg", data, "image/jpeg", tta=False)
    averaged = client.explain("a.jpg", data, "image/jpeg", tta=True)
    assert (default["tta"], plain["tta"], averaged["tta"]) == (False, False, True)
    assert default["probabilities"] == plain["probabilities"]
    assert averaged["probabilities"] != plain["probabilities"]


def test_a_rejected_file_carries_the_apis_own_message(api_server):
    with pytest.raises(ApiRejected) as caught:
        ApiClient(api_server.url).explain("notes.jpg", b"just some text, not a picture\n", None)
    assert caught.value.status_code == 415
    assert caught.value.code != "http_error"  # the API's JSON was read, not guessed
    assert caught.value.detail and "415" not in caught.value.detail


def test_model_card_has_version_and_metrics(api_server):
    card = ApiClient(api_server.url).model_card()
    assert card["version"] == "test-1"
    assert card["metrics"]["balanced_accuracy"] == 0.5


def test_an_unreachable_api_is_reported_as_unavailable(closed_port_url):
    with pytest.raises(ApiUnavailable, match="cannot reach the API"):
        ApiClient(closed_port_url).model_card()
