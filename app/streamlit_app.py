"""SkinDX web UI: upload a dermatoscopic image, get the API's prediction and its Grad-CAM.

Run: API_URL=http://127.0.0.1:8000 streamlit run streamlit_app.py   (from app/, for .streamlit/)
How it calls the API, and with which limit: api_client.py.
"""

from __future__ import annotations

import io
import os

import streamlit as st
from api_client import ApiClient, ApiRejected, ApiUnavailable, upload_limit_mb
from PIL import Image, ImageOps, UnidentifiedImageError
from presentation import (
    NOT_DERMOSCOPIC_CODE,
    OUT_OF_DISTRIBUTION_MESSAGE,
    decode_png,
    feedback_storage_note,
    metrics_table,
    model_view,
    percent,
    probability_figure,
    storage_note,
    verdict,
)

# the API's per-file limit (SKINDX_MAX_UPLOAD_MB), so that users hear it here first
MAX_UPLOAD_MB = upload_limit_mb(fallback=st.get_option("server.maxUploadSize"))
DISCLAIMER = (
    "**Not a medical device.** SkinDX is a research and teaching demo. It has not been "
    "clinically validated and must not be used to diagnose, treat or rule out any disease. "
    "If a skin lesion worries you, see a doctor."
)

# The "Average over 8 orientations" toggle starts on: a person waits for one image, for whom the
# ~100 ms that the 7 extra views cost on 2 cores (bench/results/tta.json) are invisible, and it
# raised test balanced accuracy at every seed measured (docs/results.md, test-time augmentation
# over three seeds). The API's own default (SKINDX_TTA) stays off for machine clients'
# throughput. UI_TTA=false starts the toggle off.
TTA_DEFAULT = os.environ.get("UI_TTA", "true").strip().lower() not in {"0", "false", "no", "off"}

st.set_page_config(page_title="SkinDX", page_icon=":material/biotech:", layout="wide")
client = ApiClient.from_env()


@st.cache_data(ttl=60, show_spinner=False)
def load_model_card(api_url: str) -> dict:
    return ApiClient(api_url).model_card()


def show_model_sidebar() -> None:
    with st.sidebar:
        st.header("Model")
        try:
            card = load_model_card(client.base_url)
        except ApiUnavailable as exc:
            st.error(f"The analysis service is not reachable right now: {exc}.")
            return
        except ApiRejected as exc:
            st.error(f"Could not read the model card: {exc.detail}")
            return
        st.markdown(
            f"**{card.get('name', 'unnamed model')}**  \nversion `{card.get('version', '?')}`"
        )
        if card.get("created"):
            st.caption(f"created {card['created']}")
        table = metrics_table(card)
        if table["metric"]:
            st.subheader("Test metrics")
            st.table(table)
            st.caption("95 % intervals: bootstrap over lesions of the test split.")
        else:
            st.caption("This model card carries no test metrics.")


def resize_policy() -> str | None:
    try:
        return load_model_card(client.base_url).get("preprocessing", {}).get("resize_policy")
    except (ApiUnavailable, ApiRejected):
        return None


PREVIEW_FORMATS = ("JPEG", "PNG", "WEBP")
PREVIEW_MAX_PIXELS = 40_000_000  # the API's own limit; larger uploads are the API's to refuse
PREVIEW_SIDE = 1024


@st.cache_data(max_entries=8, show_spinner=False)
def preview_of(data: bytes) -> Image.Image | None:
    """The upload as an upright RGB image of at most PREVIEW_SIDE, or None when it cannot be
    decoded here (cached: Streamlit reruns the script on every click)."""
    try:
        image = Image.open(io.BytesIO(data), formats=PREVIEW_FORMATS)
        if image.width * image.height > PREVIEW_MAX_PIXELS:
            return None
        image.draft("RGB", (PREVIEW_SIDE, PREVIEW_SIDE))  # JPEG: decode at a reduced scale
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        return image
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def preview(uploaded) -> Image.Image | None:
    return preview_of(uploaded.getvalue())


def show_out_of_distribution(detail: str | None = None) -> None:
    """The warning shown in place of a diagnosis for an image that is not dermoscopy."""
    st.warning(
        f"**Not a dermatoscopic image.** {OUT_OF_DISTRIBUTION_MESSAGE}"
        + (f"\n\n_{detail}_" if detail else ""),
        icon=":material/image_not_supported:",
    )


def show_result(result: dict, original: Image.Image | None) -> None:
    shown = verdict(result)
    if shown.kind == "out_of_distribution":
        show_out_of_distribution()
        if original is not None:
            st.image(model_view(original, resize_policy()), width=320, alt="Uploaded image")
        st.caption(
            f"Model {result['model_version']} · out-of-distribution score "
            f"{result.get('ood_score', 0):.2f} (threshold {result.get('ood_threshold') or 0:.2f})"
        )
        st.caption(storage_note(result))
        return
    style = shown.style
    with st.container(border=True):
        st.subheader(f"{style.icon} {shown.title}", anchor=False)
        if shown.kind == "uncertain":
            st.caption(
                f"most likely `{result['predicted_class']}` ({result['predicted_name']}), "
                "below the confidence threshold"
            )
        else:
            st.caption(f"class code `{result['predicted_class']}`")
        left, right = st.columns(2)
        left.metric("Confidence (calibrated)", percent(result["confidence"]))
        with right:
            st.markdown("**Risk**")
            if shown.kind == "uncertain":
                st.badge("Uncertain · see a dermatologist", icon=style.icon, color=style.color)
            else:
                st.badge(
                    f"{result['risk_group'].capitalize()} · {result['urgency']} urgency",
                    icon=style.icon,
                    color=style.color,
                )
        st.markdown(f":{style.color}[{shown.message}]")
    figure_input = {**result, "urgency": ""} if shown.kind == "uncertain" else result
    st.plotly_chart(
        probability_figure(figure_input), width="stretch", config={"displayModeBar": False}
    )
    image_col, cam_col = st.columns(2)
    if original is not None:
        image_col.image(
            model_view(original, resize_policy()),
            caption="Your image, as the model sees it",
            width="stretch",
            alt="Uploaded image",
        )
    try:
        overlay = decode_png(result["heatmap_png_base64"])
    except (KeyError, ValueError) as exc:
        cam_col.warning(f"No Grad-CAM overlay: {exc}")
    else:
        cam_col.image(
            overlay,
            caption=f"Grad-CAM: regions that drove '{result['explained_class']}'",
            width="stretch",
            alt="Grad-CAM overlay",
        )
    views = " · averaged over 8 orientations" if result.get("tta") else ""
    st.caption(
        f"Model {result['model_version']} · answered in {result['processing_time_ms']:.0f} ms"
        + views
    )
    st.caption(storage_note(result))
    show_feedback_form(result)


def show_feedback_form(result: dict) -> None:
    """For reviewers: the confirmed diagnosis of this prediction, sent with their token."""
    request_id = result.get("request_id")
    if not request_id or not result.get("logged"):
        return  # not in the prediction log: nothing to label
    classes = {p["code"]: p["name"] for p in result["probabilities"]}
    with st.expander("Reviewer: record the confirmed diagnosis", icon=":material/rate_review:"):
        with st.form("feedback_form", clear_on_submit=False):
            label = st.selectbox(
                "Confirmed diagnosis",
                list(classes),
                index=None,
                format_func=lambda code: f"{classes[code]} ({code})",
                placeholder="Choose the confirmed class",
            )
            reviewer = st.text_input("Reviewer (optional)", max_chars=128)
            note = st.text_area("Note (optional)", max_chars=2000)
            token = st.text_input("Reviewer token", type="password")
            submitted = st.form_submit_button("Record diagnosis")
        if submitted:
            send_feedback(request_id, label, token, reviewer, note)
        recorded = st.session_state.get("recorded_feedback", {}).get(request_id)
        if recorded:
            verdict = "agrees with" if recorded["agrees"] else "differs from"
            st.success(
                f"Recorded: {classes.get(recorded['label'], recorded['label'])} "
                f"({verdict} the prediction). {feedback_storage_note(recorded)}",
                icon=":material/task_alt:",
            )


def send_feedback(request_id: str, label: str | None, token: str, reviewer: str, note: str):
    if label is None:
        st.error("Choose the confirmed diagnosis first.", icon=":material/block:")
        return
    if not token.strip():
        st.error("Enter your reviewer token.", icon=":material/key:")
        return
    try:
        answer = client.feedback(
            request_id, label, token.strip(), reviewer.strip() or None, note.strip() or None
        )
    except ApiUnavailable as exc:
        st.error(f"The feedback could not be recorded now: {exc}", icon=":material/cloud_off:")
    except ApiRejected as exc:
        st.error(f"The feedback was refused: {exc.detail}", icon=":material/block:")
    else:
        st.session_state.setdefault("recorded_feedback", {})[request_id] = answer


st.title(":material/biotech: SkinDX")
st.markdown("Dermatoscopic skin-lesion classification into the 7 HAM10000 classes, with Grad-CAM.")
st.warning(DISCLAIMER, icon=":material/medical_information:")
show_model_sidebar()

uploaded = st.file_uploader(
    f"Dermatoscopic image (JPEG, PNG or WebP, up to {MAX_UPLOAD_MB} MB)",
    # no type filter: Streamlit would refuse other files with only an icon; the API reads the
    # bytes and says exactly what is wrong
    type=None,
    max_upload_size=MAX_UPLOAD_MB,
)
if uploaded is None:
    st.session_state.pop("result", None)
    st.info("Upload an image to begin.")
    st.stop()

original = preview(uploaded)
if original is None:
    st.warning(
        f"{uploaded.name} cannot be shown as an image here. Analyze sends it to the analysis "
        "service, which will say what is wrong with it."
    )
else:
    st.image(original, caption=uploaded.name, width=320, alt="Preview")

stored = st.session_state.get("result")
if stored is not None and stored["file_id"] != uploaded.file_id:
    st.session_state.pop("result")  # a new file: the old result no longer applies

tta = st.toggle(
    "Average over 8 orientations",
    value=TTA_DEFAULT,
    help="Test-time augmentation: the diagnosis is the mean over the image's 4 rotations and "
    "their mirror images. Slightly more accurate on the test split (docs/results.md), several "
    "times slower.",
)
if st.button("Analyze", type="primary"):
    with st.spinner("Analyzing the image…"):
        try:
            answer = client.explain(uploaded.name, uploaded.getvalue(), uploaded.type, tta=tta)
        except ApiUnavailable as exc:
            st.error(
                f"The analysis service is unavailable: {exc}. Please try again in a moment.",
                icon=":material/cloud_off:",
            )
        except ApiRejected as exc:
            if exc.code == NOT_DERMOSCOPIC_CODE:  # SKINDX_OOD_ACTION=reject
                st.session_state.pop("result", None)
                show_out_of_distribution(exc.detail)
            else:
                st.error(f"The image was rejected: {exc.detail}", icon=":material/block:")
        else:
            st.session_state["result"] = {"file_id": uploaded.file_id, "answer": answer}

if "result" in st.session_state:
    show_result(st.session_state["result"]["answer"], original)
