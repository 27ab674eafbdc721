"""The served model and its batched inference; hot reload swaps the model atomically.

Each batch reads the current model once and runs entirely on it, so a reload never splits a
batch and in-flight requests finish on the model they started on. A new model is verified
(sha256s), opened and warmed up before the swap; if any of that fails the old one stays.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from serving.batcher import MicroBatcher
from serving.metrics import ServingMetrics
from serving.settings import Settings
from skindx.inference.classes import CLASS_INFO
from skindx.inference.model import PackagedModel, load_packaged_model
from skindx.inference.preprocessing import PreprocessingContract, resize_to_contract
from skindx.inference.tta import tta_probabilities

logger = logging.getLogger("serving.engine")


class ModelNotReadyError(RuntimeError):
    """No verified model is loaded (yet)."""


class ModelRejectedError(RuntimeError):
    """A new model failed verification, loading or warm-up; the old one keeps serving."""


# Largest side of the upload kept per queued request (an explanation overlay is at most 448 px).
KEPT_IMAGE_SIDE = 1024


@dataclass(frozen=True)
class InferenceItem:
    image: Image.Image  # RGB upload at most KEPT_IMAGE_SIDE: for the overlay and a reload
    pixels: np.ndarray  # uint8 (S, S, 3) under `contract`
    contract: PreprocessingContract
    tta: bool = False  # average over the 8 dihedral views (the request's ?tta=, SKINDX_TTA)

    def pixels_for(self, contract: PreprocessingContract) -> np.ndarray:
        """The model input under `contract`: the item's own pixels, or (a reload changed the
        contract while it queued) the kept image resized again."""
        return (
            self.pixels if contract == self.contract else resize_to_contract(self.image, contract)
        )


@dataclass(frozen=True)
class InferenceResult:
    probabilities: np.ndarray  # [C], temperature-calibrated
    features: np.ndarray  # [K, h, w] layer4 features, for the CAM
    model: PackagedModel  # the model that produced them
    ood_score: float | None = None  # skindx.inference.ood (None: the package has no scorer)
    in_distribution: bool | None = None
    tta: bool = False  # `probabilities` are the mean over the 8 dihedral views


class InferenceEngine:
    def __init__(self, settings: Settings, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._model: PackagedModel | None = None
        self.load_error: str | None = None
        self._reload_lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._batcher: MicroBatcher[InferenceItem, InferenceResult] | None = None

    @property
    def model(self) -> PackagedModel:
        model = self._model
        if model is None:
            reason = f"loading it failed: {self.load_error}" if self.load_error else "it is loading"
            raise ModelNotReadyError(f"no model is being served yet; {reason}")
        return model

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def batcher(self) -> MicroBatcher[InferenceItem, InferenceResult]:
        if self._batcher is None:
            raise ModelNotReadyError("the inference queue is not running")
        return self._batcher

    async def start(self) -> None:
        # One inference thread: ONNX Runtime already spreads each call over intra-op threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._batcher = MicroBatcher(
            self._run_batch,
            executor=self._executor,
            max_batch=self.settings.max_batch,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue=self.settings.queue_size,
            on_batch=self.metrics.observe_batch,
            on_depth=self.metrics.queue_depth.set,
        )
        self._batcher.start()

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def load(self, model_dir: Path | None = None) -> tuple[str | None, str]:
        """Load, verify and warm up a model, then swap it in: (previous, new) versions.

        Raises ModelRejectedError (logged, counted) and leaves the current model serving.
        """
        model_dir = Path(model_dir or self.settings.model_dir)
        async with self._reload_lock:
            previous = self._model.version if self._model is not None else None
            try:
                # its own thread: loading must not wait behind, or stall, the inference thread
                new_model = await asyncio.to_thread(self._open_and_warm_up, model_dir)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self.metrics.reloads.labels(result="refused").inc()
                if self._model is None:
                    self.load_error = reason
                logger.error(
                    "refused the model in %s (%s); %s",
                    model_dir,
                    reason,
                    f"still serving {previous}" if previous else "no model is served",
                )
                raise ModelRejectedError(reason) from exc
            self._model = new_model  # atomic swap; running batches keep their reference
            self.load_error = None
            self.metrics.reloads.labels(result="loaded").inc()
            self.metrics.set_model(new_model.version)
            logger.info("serving model %s from %s (was %s)", new_model.version, model_dir, previous)
            return previous, new_model.version

    def _open_and_warm_up(self, model_dir: Path) -> PackagedModel:
        model = load_packaged_model(model_dir, threads=self.settings.intra_op_threads)
        # the API's schema (and /explain's target) promise exactly the seven classes, in order
        if list(model.classes) != list(CLASS_INFO):
            raise ValueError(
                f"the model's classes {list(model.classes)} are not SkinDX's {list(CLASS_INFO)}"
            )
        size = model.contract.input_size
        for n in sorted({1, self.settings.max_batch}):
            probabilities, _ = model.predict(np.zeros((n, size, size, 3), np.uint8))
            if not np.all(np.isfinite(probabilities)):
                raise ValueError("the model produced non-finite probabilities on warm-up")
        return model

    def prepare(
        self,
        image: Image.Image,
        contract: PreprocessingContract | None = None,
        view: Image.Image | None = None,
        tta: bool = False,
    ) -> InferenceItem:
        """Resize an RGB upload to `contract` (the current model's when None; pass the one the
        upload was decoded under, see skindx.inference.images.decode_image), off the event loop.

        The item keeps the upload (or `view`, a larger decode of it for the Grad-CAM overlay)
        only at KEPT_IMAGE_SIDE, for the overlay and a reload that changes the contract, so
        queued requests hold little memory. `tta`: answer it with the mean over its 8 dihedral
        views."""
        contract = contract or self.model.contract
        pixels = resize_to_contract(image, contract)
        image = view if view is not None else image
        if max(image.size) > KEPT_IMAGE_SIDE:
            image = image.copy()
            image.thumbnail((KEPT_IMAGE_SIDE, KEPT_IMAGE_SIDE), Image.Resampling.BILINEAR)
        return InferenceItem(image, pixels, contract, tta)

    async def infer(self, item: InferenceItem) -> InferenceResult:
        return await self.batcher.submit(item)

    async def infer_many(self, items: list[InferenceItem]) -> list[InferenceResult]:
        return await self.batcher.submit_many(items)

    def _run_batch(self, items: list[InferenceItem]) -> list[InferenceResult]:
        model = self.model  # read once: the whole batch runs on this model
        pixels = np.stack([item.pixels_for(model.contract) for item in items])
        out = model.analyse(pixels)  # the image itself: probabilities, CAM features, OOD score
        probabilities = out.probabilities
        # The items that asked for TTA get their other 7 views as one more batch; the plain
        # pass above already gave every item its CAM features and OOD score.
        wanted = np.array([item.tta for item in items])
        if wanted.any():
            probabilities = probabilities.copy()
            probabilities[wanted] = tta_probabilities(
                model,
                pixels[wanted],
                batch_size=int(wanted.sum()),
                first_view=probabilities[wanted],
            )
        return [
            InferenceResult(
                probabilities[i],
                out.features[i],
                model,
                None if out.ood_scores is None else float(out.ood_scores[i]),
                None if out.in_distribution is None else bool(out.in_distribution[i]),
                bool(wanted[i]),
            )
            for i in range(len(items))
        ]
