"""Load a packaged model for serving: verify it, then run it with ONNX Runtime.

A package is a directory with `model.json` (the model card) and the files it lists with their
sha256 (`model.onnx`, `weights.safetensors`, `cam_head.npy`, and the out-of-distribution
scorer's `ood.json` + arrays when the card has an `ood` section). Nothing is loaded until every
listed file is present and matches its hash. numpy + onnxruntime only: never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skindx.inference.cam import cam_for_class
from skindx.inference.hashing import sha256_file
from skindx.inference.ood import OOD_FILE, OodError, OodScorer
from skindx.inference.preprocessing import PreprocessingContract, normalize
from skindx.inference.resources import cpu_threads

logger = logging.getLogger(__name__)

CARD_FILE = "model.json"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
CAM_HEAD_FILE = "cam_head.npy"
CAM_ONNX_FILE = "cam.onnx"  # layer3 Grad-CAM graph (packages whose layer4 is too coarse)
CAM_OUTPUTS = ("activations", "weights")
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "features")  # every package has these
POOLED_OUTPUT = "pooled"  # packages since the OOD scorer: each stage's global average pool
EXPORTED_OUTPUTS = (*OUTPUT_NAMES, POOLED_OUTPUT)
STAGES = ("layer1", "layer2", "layer3", "layer4")  # the order of `pooled`
REQUIRED_CARD_KEYS = ("name", "version", "classes", "preprocessing", "temperature", "files")
CARD_DIGEST_KEY = "card_sha256"


class ModelIntegrityError(RuntimeError):
    """The package is incomplete, tampered with or not a SkinDX package: refuse to serve it."""


def card_digest(card: dict[str, Any]) -> str:
    """sha256 of the card's canonical JSON (sorted keys, compact), its own digest left out.

    The card holds the other files' hashes, so this covers the whole package against corruption
    and hand edits (a new temperature, reordered classes). It is no signature: whoever can
    rewrite the card can recompute it; trust comes from where the package was built."""
    body = {key: value for key, value in card.items() if key != CARD_DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)  # ASCII: any str
    return hashlib.sha256(text.encode()).hexdigest()


def read_card(path: str | Path) -> dict[str, Any]:
    card_path = Path(path) / CARD_FILE
    if not card_path.is_file():
        raise ModelIntegrityError(f"{card_path} not found: {path} is not a packaged model")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{card_path} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelIntegrityError(f"{card_path} does not hold a model card (a JSON object)")
    missing = [key for key in REQUIRED_CARD_KEYS if key not in card]
    if missing:
        raise ModelIntegrityError(f"{card_path} lacks the key(s) {missing}")
    return card


def verify_package(path: str | Path) -> dict[str, Any]:
    """Check every file listed in the card against its sha256; return the card.

    Raises ModelIntegrityError naming every missing, altered or unsafe file at once.
    """
    path = Path(path)
    card = read_card(path)
    files = card["files"]
    if not isinstance(files, dict) or not files:
        raise ModelIntegrityError(f"{path / CARD_FILE} lists no files to verify")
    cam_head = (card.get("cam") or {}).get("head", CAM_HEAD_FILE)
    cam_graph = (card.get("cam") or {}).get("graph")
    required = [ONNX_FILE, cam_head, *ood_files(card), *([str(cam_graph)] if cam_graph else [])]
    problems = [
        f"{name}: required but not listed in the card" for name in required if name not in files
    ]
    recorded = card.get(CARD_DIGEST_KEY)
    if recorded is None:
        # packages made before the card was sealed (still in registries): served, with a warning
        logger.warning(
            "%s has no %s (packaged by an older SkinDX): its own content is not verified; "
            "`dvc repro package promote` rebuilds it sealed",
            path / CARD_FILE,
            CARD_DIGEST_KEY,
        )
    elif recorded != (actual := card_digest(card)):
        problems.append(
            f"{CARD_FILE}: its content (sha256 {actual[:12]}…) does not match its "
            f"{CARD_DIGEST_KEY} {str(recorded)[:12]}… (edited after packaging?)"
        )
    for name, expected in sorted(files.items()):
        # Names come from a file we do not trust yet: keep them inside the package.
        if Path(name).name != name or name in (".", "..", CARD_FILE):
            problems.append(f"{name}: not a plain file name inside the package")
            continue
        target = path / name
        if not target.is_file():
            problems.append(f"{name}: missing")
        elif (actual := sha256_file(target)) != expected:
            problems.append(
                f"{name}: sha256 {actual[:12]}… does not match the card's {str(expected)[:12]}…"
            )
    if problems:
        raise ModelIntegrityError(
            f"refusing the model in {path}: "
            + "; ".join(problems)
            + ". Rebuild it (`dvc repro package promote`) instead of editing files by hand."
        )
    return card


def ood_files(card: dict[str, Any]) -> list[str]:
    """The scorer's files a card with an `ood` section must list (and so seal)."""
    spec = card.get("ood")
    if not isinstance(spec, dict):
        return []
    stages = spec.get("stages") or []
    arrays = [str(s.get(k)) for s in stages if isinstance(s, dict) for k in ("whitening", "means")]
    return [OOD_FILE, *arrays]


def create_session(onnx_path: str | Path, threads: int | None = None, providers=None):
    """An ONNX Runtime session on `onnx_path` with intra-op threads = usable CPUs
    (skindx.inference.resources.cpu_threads: affinity and the container's CPU quota)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-wait after a run: its spinning threads took the cores from the numpy work that
    # follows each batch (softmax, the OOD scorer's matmuls); bench/bench_serving.py on the
    # demo model before and after: README "Benchmarks"
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
    )


def softmax(logits: np.ndarray, temperature: float = 1.0, dtype=np.float32) -> np.ndarray:
    """softmax(logits / T) over the last axis, computed in float64; the one definition for
    serving, export parity and evaluation (which keeps float64 for its metrics)."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype, copy=False)


def load_cam_head(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """cam_head.npy holds [C, K+1]: the fc weight W in columns :K, the bias in column K."""
    head = np.load(path, allow_pickle=False)
    if head.ndim != 2 or head.shape[1] < 2:
        raise ModelIntegrityError(f"{path}: expected a [C, K+1] array, got shape {head.shape}")
    return head[:, :-1].astype(np.float32), head[:, -1].astype(np.float32)


@dataclass(frozen=True)
class ModelOutput:
    """One batch through the model: what serving answers with."""

    probabilities: np.ndarray  # [N, C], temperature-calibrated
    features: np.ndarray  # [N, K, h, w] layer4
    logits: np.ndarray  # [N, C]
    ood_scores: np.ndarray | None  # [N] (higher = stranger); None: the package has no scorer
    in_distribution: np.ndarray | None  # [N] bool


@dataclass
class PackagedModel:
    path: Path
    card: dict[str, Any]
    contract: PreprocessingContract
    session: Any = field(repr=False)
    cam_weight: np.ndarray = field(repr=False)
    cam_bias: np.ndarray = field(repr=False)
    ood: OodScorer | None = field(default=None, repr=False)
    cam_session: Any = field(default=None, repr=False)  # cam.onnx, when the CAM is on layer3

    @property
    def cam_layer(self) -> str:
        """The feature map /explain's Grad-CAM comes from (the card's cam.layer)."""
        return str((self.card.get("cam") or {}).get("layer", "layer4"))

    def explain(
        self, pixels: np.ndarray, class_index: int, size: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, str, tuple[int, int]]:
        """Grad-CAM of one uint8 (S, S, 3) image for `class_index`: ([0, 1] map at `size`,
        layer, its grid (h, w)). layer3 through cam.onnx when the package has it, else the
        layer4 CAM from the fc weights (Grad-CAM up to scale for a GAP + linear head)."""
        size = size or (self.contract.input_size, self.contract.input_size)
        x = normalize(pixels, self.contract)
        if self.cam_session is None:
            features = self.run(x)[1][0]
            return self.cam(features, class_index, size), "layer4", tuple(features.shape[1:])
        activations, weights = self.cam_session.run(list(CAM_OUTPUTS), {INPUT_NAME: x})
        cam = cam_for_class(activations[0], weights[0], class_index, size)
        return cam, self.cam_layer, tuple(activations.shape[2:])

    @property
    def version(self) -> str:
        return str(self.card["version"])

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def temperature(self) -> float:
        return float(self.card.get("temperature") or 1.0)

    @property
    def classes(self) -> list[str]:
        return [c["code"] for c in self.card["classes"]]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """float32 (N, 3, S, S), already normalised -> {output name: array} (logits [N, C],
        features [N, K, h, w], and `pooled` [N, D] in packages that export it)."""
        size = self.contract.input_size
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise ValueError(f"expected input of shape (N, 3, {size}, {size}), got {x.shape}")
        names = self.output_names
        values = self.session.run(names, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(names, values, strict=True))

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 (N, 3, S, S), already normalised -> (logits [N, C], features [N, K, h, w])."""
        out = self.run_all(x)
        return out["logits"], out["features"]

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, S, S, 3) as produced by resize_to_contract -> (probabilities, features)."""
        logits, features = self.run(normalize(images, self.contract))
        return softmax(logits, self.temperature), features

    def analyse(self, images: np.ndarray) -> ModelOutput:
        """uint8 (N, S, S, 3) -> probabilities, features and (with a scorer) OOD scores."""
        out = self.run_all(normalize(images, self.contract))
        logits, features = out["logits"], out["features"]
        scores = inside = None
        if self.ood is not None:
            scores = self.ood.score(out[POOLED_OUTPUT])
            inside = self.ood.in_distribution(scores)
        return ModelOutput(softmax(logits, self.temperature), features, logits, scores, inside)

    def cam(
        self, features: np.ndarray, class_index: int, size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """The [0, 1] class activation map of one image's features, at `size` (default S x S)."""
        size = size or (self.contract.input_size, self.contract.input_size)
        return cam_for_class(features, self.cam_weight, class_index, size)


def load_packaged_model(
    path: str | Path, threads: int | None = None, providers=None
) -> PackagedModel:
    """Verify the package in `path` and open it; raises ModelIntegrityError if it is not intact."""
    path = Path(path)
    card = verify_package(path)
    try:
        contract = PreprocessingContract.from_dict(card["preprocessing"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelIntegrityError(f"{path / CARD_FILE}: bad preprocessing contract: {exc}") from exc
    weight, bias = load_cam_head(path / (card.get("cam") or {}).get("head", CAM_HEAD_FILE))
    ood = None
    if isinstance(card.get("ood"), dict):
        try:
            ood = OodScorer.from_dict(card["ood"], path)
        except OodError as exc:
            raise ModelIntegrityError(f"{path}: bad out-of-distribution scorer: {exc}") from exc
    session = create_session(path / ONNX_FILE, threads=threads, providers=providers)
    cam_graph = (card.get("cam") or {}).get("graph")
    cam_session = None
    if cam_graph:
        cam_session = create_session(path / str(cam_graph), threads=threads, providers=providers)
        if tuple(o.name for o in cam_session.get_outputs()) != CAM_OUTPUTS:
            raise ModelIntegrityError(f"{path / str(cam_graph)}: outputs are not {CAM_OUTPUTS}")
    outputs = [o.name for o in session.get_outputs()]
    # older packages (no scorer) export only logits and features
    allowed = (EXPORTED_OUTPUTS,) if ood is not None else (OUTPUT_NAMES, EXPORTED_OUTPUTS)
    if tuple(outputs) not in allowed or len(card["classes"]) != weight.shape[0]:
        raise ModelIntegrityError(
            f"{path}: model outputs {outputs} / {weight.shape[0]} CAM classes do not match the "
            f"card ({list(EXPORTED_OUTPUTS if ood else OUTPUT_NAMES)}, "
            f"{len(card['classes'])} classes)"
        )
    if ood is not None:
        pooled_dim = session.get_outputs()[outputs.index(POOLED_OUTPUT)].shape[-1]
        if isinstance(pooled_dim, int) and pooled_dim != ood.channels:
            raise ModelIntegrityError(
                f"{path}: the out-of-distribution scorer expects {ood.channels} pooled "
                f"channels, the model exports {pooled_dim}"
            )
    return PackagedModel(path, card, contract, session, weight, bias, ood, cam_session)
