"""How the UI calls the SkinDX API, all of it: where the API is (API_URL), what it accepts
(the per-file upload limit, SKINDX_MAX_UPLOAD_MB), which endpoints the UI uses (/explain,
/predict, /model, /feedback) and how an answer becomes a result or an error for the user. The UI's only way
to reach the model (no torch, no ONNX, no skindx: the image installs app/requirements.txt only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 60.0
UPLOAD_LIMIT_ENV = "SKINDX_MAX_UPLOAD_MB"  # the API's own setting, from the repository's .env


def upload_limit_mb(environ: Mapping[str, str] | None = None, fallback: int | None = None) -> int:
    """The API's per-file upload limit in MB, so that users hear it from the UI first:
    SKINDX_MAX_UPLOAD_MB (what the API reads), else `fallback` (Streamlit's own
    server.maxUploadSize, which the stack sets from the same variable)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(UPLOAD_LIMIT_ENV, "").strip()
    if not raw:
        if fallback is None:
            raise ValueError(f"set {UPLOAD_LIMIT_ENV} to the API's upload limit in MB")
        return int(fallback)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{UPLOAD_LIMIT_ENV}={raw!r} must be a whole number of MB, at least 1")
    return int(raw)


class ApiUnavailable(Exception):
    """The API could not be reached, timed out, or is not ready yet."""


@dataclass
class ApiRejected(Exception):
    """The API answered with an error: its own `detail` message is meant for the user."""

    status_code: int
    detail: str
    code: str = "http_error"

    def __str__(self) -> str:
        return f"{self.detail} (HTTP {self.status_code}, {self.code})"


def _rejection(response: httpx.Response) -> ApiRejected:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return ApiRejected(
            response.status_code, body["detail"], str(body.get("code", "http_error"))
        )
    # not the API's JSON error (e.g. a proxy's HTML page): say what we know
    text = " ".join(response.text.split())[:200] or response.reason_phrase
    return ApiRejected(response.status_code, f"the server answered {response.status_code}: {text}")


class ApiClient:
    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout, connect=5.0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiClient:
        """The API at API_URL (compose: http://api:8000; `make serve`: its loopback port)."""
        environ = os.environ if environ is None else environ
        return cls(environ.get("API_URL") or DEFAULT_API_URL)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            with httpx.Client(base_url=self.base_url, timeout=self._timeout) as client:
                response = client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiUnavailable(f"the API at {self.base_url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"cannot reach the API at {self.base_url} ({exc})") from exc
        if response.status_code == 503:
            raise ApiUnavailable(_rejection(response).detail)
        if response.is_error:
            raise _rejection(response)
        return response.json()

    def explain(
        self, filename: str, content: bytes, content_type: str | None, tta: bool | None = None
    ) -> dict[str, Any]:
        """The prediction plus the Grad-CAM overlay (base64 PNG) for one image. `tta`: average
        the diagnosis over the image's 8 orientations (None: the server's default)."""
        files = {"file": (filename, content, content_type or "application/octet-stream")}
        return self._request("POST", "/explain", files=files, params=_tta_param(tta))

    def predict(
        self, filename: str, content: bytes, content_type: str | None, tta: bool | None = None
    ) -> dict[str, Any]:
        files = {"file": (filename, content, content_type or "application/octet-stream")}
        return self._request("POST", "/predict", files=files, params=_tta_param(tta))

    def feedback(
        self,
        request_id: str,
        label: str,
        token: str,
        reviewer: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Record a reviewer's confirmed diagnosis of the prediction `request_id` (the API's
        SKINDX_REVIEWER_TOKEN as `token`). ApiRejected: 401/403 token, 404 disabled or unknown
        prediction, 409 labelled already, 422 not a class."""
        body = {"request_id": request_id, "label": label}
        body.update({k: v for k, v in (("reviewer", reviewer), ("note", note)) if v})
        headers = {"Authorization": f"Bearer {token}"}
        return self._request("POST", "/feedback", json=body, headers=headers)

    def model_card(self) -> dict[str, Any]:
        """The served model's card, with `metric_labels` (headline metric -> label, in order)."""
        return self._request("GET", "/model")


def _tta_param(tta: bool | None) -> dict[str, str]:
    return {} if tta is None else {"tta": "true" if tta else "false"}
