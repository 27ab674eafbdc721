"""What the UI shows, as plain data and figures (no Streamlit here, so it is unit-testable)."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from PIL import Image


@dataclass(frozen=True)
class UrgencyStyle:
    color: str  # a st.badge colour
    hex: str  # the same colour for the chart
    icon: str  # a Material Symbol: Streamlit ships the font, so it renders everywhere
    advice: str


URGENCY_STYLES: dict[str, UrgencyStyle] = {
    "critical": UrgencyStyle(
        "red",
        "#c62828",
        ":material/emergency_home:",
        "Have this lesion examined by a dermatologist promptly.",
    ),
    "high": UrgencyStyle(
        "orange", "#ef6c00", ":material/warning:", "Book a dermatologist appointment soon."
    ),
    "medium": UrgencyStyle(
        "yellow", "#f9a825", ":material/report:", "Mention this lesion at your next skin check."
    ),
    "low": UrgencyStyle(
        "green", "#2e7d32", ":material/check_circle:", "Usually benign; keep an eye on changes."
    ),
}
UNKNOWN_URGENCY = UrgencyStyle("gray", "#757575", ":material/help:", "Urgency unknown.")


def urgency_style(urgency: str) -> UrgencyStyle:
    return URGENCY_STYLES.get(urgency, UNKNOWN_URGENCY)


def percent(probability: float) -> str:
    return f"{probability * 100:.1f} %"


def probability_figure(prediction: dict[str, Any]) -> go.Figure:
    """Horizontal bars of every class's probability, the predicted class highlighted."""
    rows = sorted(prediction["probabilities"], key=lambda p: p["probability"])
    predicted = prediction["predicted_class"]
    highlight = urgency_style(prediction.get("urgency", "")).hex
    figure = go.Figure(
        go.Bar(
            x=[r["probability"] for r in rows],
            y=[f"{r['name']} ({r['code']})" for r in rows],
            orientation="h",
            marker_color=[highlight if r["code"] == predicted else "#90a4ae" for r in rows],
            text=[percent(r["probability"]) for r in rows],
            textposition="auto",
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Probability of each class (calibrated)",
        xaxis={"range": [0, 1], "tickformat": ".0%", "title": None},
        yaxis={"title": None},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=320,
    )
    return figure


def decode_png(data_base64: str) -> bytes:
    """The API's base64 PNG as bytes; ValueError if it is not one."""
    try:
        data = base64.b64decode(data_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the API sent an explanation image that is not valid base64") from exc
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("the API sent an explanation image that is not a PNG")
    return data


def headline_metrics(card: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) for the card's headline test metrics that are present and finite.

    Which metrics, their order and their labels come with the card (`metric_labels`, from the
    API's /model, which takes them from skindx.inference.metrics): the UI keeps no list of its own.
    """
    metrics = card.get("metrics") or {}
    if isinstance(metrics.get("test"), dict):  # {"test": {...}, "val": {...}} layouts
        metrics = metrics["test"]
    labels = card.get("metric_labels") or {}
    rows = []
    for key, label in labels.items():
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            rows.append((label, f"{value:.3f}"))
    return rows


def model_view(image: Image.Image, resize_policy: str | None) -> Image.Image:
    """The part of the upload the model sees (the card's resize policy), so that it lines up
    with the Grad-CAM overlay: the centred square, or the whole image squeezed to a square."""
    width, height = image.size
    side = min(width, height)
    if resize_policy == "stretch":
        return image.resize((side, side), Image.Resampling.BILINEAR)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def storage_note(result: dict) -> str:
    """What the server kept of this upload, in words (the API's `logged` and `image_stored`)."""
    if result.get("image_stored"):
        return "The server stored a copy of this image (for review and retraining)."
    if result.get("logged"):
        return "The image was not stored: the server logged only the prediction and statistics."
    return "The image was not stored, and this prediction was not logged."


def feedback_storage_note(recorded: dict) -> str:
    if recorded.get("image_stored"):
        return "The image is stored, so this case can join the next training."
    return "The image was not stored, so this case counts in monitoring but cannot be trained on."


# --- what the answer means: a diagnosis, an uncertain answer, or an image we cannot judge ------
NOT_DERMOSCOPIC_CODE = "not_dermoscopic"  # the API's 422 code (SKINDX_OOD_ACTION=reject)
NEUTRAL = UrgencyStyle("gray", "#757575", ":material/help:", "")


@dataclass(frozen=True)
class Verdict:
    kind: str  # "out_of_distribution" | "uncertain" | "diagnosis"
    title: str
    message: str
    style: UrgencyStyle


OUT_OF_DISTRIBUTION_MESSAGE = (
    "This image does not look like a dermatoscopic image of a skin lesion, so SkinDX shows no "
    "diagnosis for it. Upload a dermatoscope photograph of one pigmented lesion, in colour and "
    "centred: not a screenshot, document, X-ray, everyday photo or clinical/smartphone picture."
)
UNCERTAIN_MESSAGE = (
    "The model is not confident enough to name a diagnosis for this image (its confidence is "
    "below the threshold chosen on validation images). Please see a dermatologist."
)


def verdict(result: dict[str, Any]) -> Verdict:
    """How to present an answer: out of distribution (a warning, no diagnosis), uncertain
    (neutral colours, never a benign check), or the diagnosis with its urgency style."""
    if result.get("in_distribution") is False:
        return Verdict(
            "out_of_distribution",
            "Not a dermatoscopic image",
            OUT_OF_DISTRIBUTION_MESSAGE,
            UrgencyStyle("orange", "#ef6c00", ":material/image_not_supported:", ""),
        )
    if result.get("uncertain"):
        return Verdict("uncertain", "Uncertain: see a dermatologist", UNCERTAIN_MESSAGE, NEUTRAL)
    style = urgency_style(result.get("urgency", ""))
    return Verdict("diagnosis", result["predicted_name"], style.advice, style)


def interval(metrics: dict[str, Any], key: str) -> str:
    """The 95 % bootstrap interval beside a metric (`<key>_ci_low/_ci_high`), or an em dash."""
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    numbers = [v for v in (low, high) if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == 2 and all(math.isfinite(v) for v in numbers):
        return f"{low:.3f} – {high:.3f}"
    return "—"


def metrics_table(card: dict[str, Any]) -> dict[str, list[str]]:
    """The UI's metrics table: each headline test metric, its value and its 95 % interval
    (lesion-grouped bootstrap, from the card), then the out-of-distribution check's AUROC and
    test rejection rate when the package has a scorer."""
    metrics = card.get("metrics") or {}
    if isinstance(metrics.get("test"), dict):
        metrics = metrics["test"]
    labels = card.get("metric_labels") or {}
    label_keys = {label: key for key, label in labels.items()}
    rows = headline_metrics(card)
    table = {
        "metric": [label for label, _ in rows],
        "value": [value for _, value in rows],
        "95 % interval": [interval(metrics, label_keys[label]) for label, _ in rows],
    }
    evaluation = ((card.get("ood") or {}).get("evaluation")) or {}
    for key, label in (
        ("auroc", "Out-of-distribution AUROC"),
        ("test_rejection_rate", "Test images flagged out of distribution"),
    ):
        value = evaluation.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            table["metric"].append(label)
            table["value"].append(f"{value:.3f}")
            table["95 % interval"].append("—")
    return table
