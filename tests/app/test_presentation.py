"""The UI's pure presentation helpers: urgency styles, the probability chart, metrics, PNGs."""

from __future__ import annotations

import base64

import pytest
from PIL import Image
from presentation import (
    URGENCY_STYLES,
    decode_png,
    headline_metrics,
    model_view,
    percent,
    probability_figure,
    urgency_style,
)

from skindx.inference.classes import CLASS_CODES, CLASS_INFO

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def a_prediction(predicted: str = "mel") -> dict:
    probabilities = [
        {"code": c, "name": CLASS_INFO[c].name, "probability": 0.4 if c == predicted else 0.1}
        for c in CLASS_CODES
    ]
    info = CLASS_INFO[predicted]
    return {
        "predicted_class": predicted,
        "predicted_name": info.name,
        "confidence": 0.4,
        "risk_group": info.risk_group,
        "urgency": info.urgency,
        "probabilities": probabilities,
    }


def test_every_urgency_the_api_can_send_has_a_distinct_style():
    urgencies = {info.urgency for info in CLASS_INFO.values()}
    assert urgencies <= set(URGENCY_STYLES)
    assert len({s.color for s in URGENCY_STYLES.values()}) == len(URGENCY_STYLES)
    assert urgency_style("critical").icon == ":material/emergency_home:"
    assert urgency_style("nonsense").color == "gray"


def test_probability_figure_shows_all_seven_classes_and_highlights_the_prediction():
    figure = probability_figure(a_prediction("mel"))
    bar = figure.data[0]
    assert len(bar.y) == 7
    assert bar.y[-1] == "Melanoma (mel)"  # sorted ascending: the largest bar is on top
    highlighted = [y for y, c in zip(bar.y, bar.marker.color, strict=True) if c != "#90a4ae"]
    assert highlighted == ["Melanoma (mel)"]
    assert bar.marker.color[-1] == URGENCY_STYLES["critical"].hex
    assert list(bar.text).count("40.0 %") == 1


def test_percent_formats_one_decimal():
    assert percent(0.87345) == "87.3 %"


def test_decode_png_accepts_png_and_rejects_other_bytes():
    assert decode_png(base64.b64encode(PNG_1PX).decode()) == PNG_1PX
    with pytest.raises(ValueError, match="not valid base64"):
        decode_png("not base64 !!")
    with pytest.raises(ValueError, match="not a PNG"):
        decode_png(base64.b64encode(b"GIF89a....").decode())


LABELS = {  # as the API's /model sends them (skindx.inference.metrics)
    "balanced_accuracy": "Balanced accuracy",
    "accuracy": "Accuracy",
    "macro_f1": "Macro F1",
    "ece": "Calibration error (ECE)",
}


def test_headline_metrics_picks_known_finite_numbers_in_order():
    card = {
        "metric_labels": LABELS,
        "metrics": {
            "accuracy": 0.8,
            "balanced_accuracy": 0.71234,
            "ece": float("nan"),
            "per_class": {"mel": {}},
            "n_samples": 10,
            "macro_f1": True,
        },
    }
    assert headline_metrics(card) == [("Balanced accuracy", "0.712"), ("Accuracy", "0.800")]


def test_headline_metrics_reads_a_test_section_and_tolerates_none():
    card = {
        "metric_labels": LABELS,
        "metrics": {"test": {"accuracy": 0.5}, "val": {"accuracy": 0.9}},
    }
    assert headline_metrics(card) == [("Accuracy", "0.500")]
    assert headline_metrics({"metric_labels": LABELS, "metrics": None}) == []
    assert headline_metrics({}) == []
    # a card without labels shows no metrics rather than names the UI would have to invent
    assert headline_metrics({"metrics": {"accuracy": 0.5}}) == []


def test_model_view_matches_the_contracts_resize_policy():
    image = Image.new("RGB", (600, 450))
    image.paste((255, 0, 0), (0, 0, 75, 450))  # a red band left of the centred square
    cropped = model_view(image, "shorter_side_center_crop")
    assert cropped.size == (450, 450) and cropped.getpixel((0, 0)) == (0, 0, 0)
    stretched = model_view(image, "stretch")
    assert stretched.size == (450, 450) and stretched.getpixel((0, 200))[0] > 200


def test_storage_notes_say_whether_the_image_was_stored():
    from presentation import feedback_storage_note, storage_note

    assert "stored a copy" in storage_note({"logged": True, "image_stored": True})
    assert "not stored" in storage_note({"logged": True, "image_stored": False})
    assert "not logged" in storage_note({"logged": False, "image_stored": False})
    assert "next training" in feedback_storage_note({"image_stored": True})
    assert "cannot be trained on" in feedback_storage_note({"image_stored": False})


# --- out of distribution, uncertain, metrics with intervals (issue 12) -------------------------
def test_verdict_out_of_distribution_replaces_the_diagnosis():
    from presentation import verdict

    shown = verdict({**a_prediction("nv"), "in_distribution": False, "uncertain": True})
    assert shown.kind == "out_of_distribution"
    assert "not look like a dermatoscopic image" in shown.message
    assert "Benign" not in shown.title and "nevi" not in shown.title.lower()


def test_verdict_uncertain_is_neutral_never_a_green_check():
    from presentation import verdict

    for code in CLASS_CODES:  # benign classes too (nv, bkl, df, vasc are green when certain)
        shown = verdict({**a_prediction(code), "in_distribution": True, "uncertain": True})
        assert shown.kind == "uncertain"
        assert shown.title == "Uncertain: see a dermatologist"
        assert shown.style.color == "gray" and "check" not in shown.style.icon
    certain = verdict({**a_prediction("nv"), "in_distribution": True, "uncertain": False})
    assert certain.kind == "diagnosis" and certain.style.color == "green"
    # packages without a scorer answer in_distribution null: shown as before
    assert verdict({**a_prediction("mel"), "in_distribution": None}).kind == "diagnosis"


def test_metrics_table_shows_the_cards_bootstrap_intervals_and_the_ood_check():
    from presentation import metrics_table

    card = {
        "metric_labels": LABELS,
        "metrics": {
            "balanced_accuracy": 0.61,
            "balanced_accuracy_ci_low": 0.55,
            "balanced_accuracy_ci_high": 0.672,
            "accuracy": 0.7,
        },
        "ood": {"evaluation": {"auroc": 0.981, "test_rejection_rate": 0.049}},
    }
    table = metrics_table(card)
    assert table["metric"][:2] == ["Balanced accuracy", "Accuracy"]
    assert table["95 % interval"][:2] == ["0.550 – 0.672", "—"]
    assert table["value"][2:] == ["0.981", "0.049"]
    assert "Out-of-distribution AUROC" in table["metric"]
    assert metrics_table({"metric_labels": LABELS})["metric"] == []
