"""From an answered image to its prediction-log record (serving/predlog): built on the event
loop from values already computed, handed to the writer's queue, never waited on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from serving.engine import InferenceResult
from serving.predlog.writer import EXTENSIONS, PendingRecord, PredictionLog
from serving.uploads import UploadFacts


@dataclass(frozen=True)
class Logged:
    logged: bool  # the record was queued (False: the log is off or its queue was full)
    image_stored: bool  # ...with the image, which the writer keeps (SKINDX_STORE_UPLOADS)


NOT_LOGGED = Logged(False, False)


def record_prediction(
    log: PredictionLog | None,
    *,
    request_id: str,
    http_request_id: str,
    endpoint: str,
    batch_index: int | None,
    result: InferenceResult,
    facts: UploadFacts | None,
    latency_ms: float,
) -> Logged:
    if log is None or facts is None:
        return NOT_LOGGED
    model = result.model
    probabilities = {c: float(p) for c, p in zip(model.classes, result.probabilities, strict=True)}
    predicted = max(probabilities, key=probabilities.__getitem__)
    row = {
        "request_id": request_id,
        "http_request_id": http_request_id,
        "endpoint": endpoint,
        "batch_index": batch_index,
        "created_at": datetime.now(UTC),
        "model_version": model.version,
        "card_sha256": model.card.get("card_sha256"),
        "predicted_class": predicted,
        "confidence": probabilities[predicted],
        "probabilities": probabilities,
        "ood_score": result.ood_score,  # None when the package has no scorer
        "tta": result.tta,
        "image_format": facts.image_format,
        "image_width": facts.width,
        "image_height": facts.height,
        "image_bytes": facts.nbytes,
        "image_sha256": facts.sha256,
        **facts.stats,
        "latency_ms": latency_ms,
    }
    image = facts.data if log.stores_uploads else None
    queued = log.submit(PendingRecord(row, image, EXTENSIONS.get(facts.image_format, "bin")))
    return Logged(queued, queued and image is not None)
