"""The reference-style baseline for bench/bench_serving.py: FastAPI whose `async def` endpoint runs a
torch eager model synchronously (blocking the event loop), one image per call, as the original
SkinDX server does. Same model (weights.safetensors of the package), same preprocessing.

    python bench/reference_server.py --model-dir serving/model --port 8001
"""

import argparse
import io
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from skindx.inference import PreprocessingContract, preprocess
from skindx.inference.model import WEIGHTS_FILE, read_card, softmax
from skindx.inference.preprocessing import apply_draft
from skindx.models import build_model, read_state_dict


def create_app(model_dir: Path) -> FastAPI:
    card = read_card(model_dir)
    contract = PreprocessingContract.from_dict(card["preprocessing"])
    arch = card.get("architecture", {}).get("arch", "resnet50")
    model = build_model(arch, num_classes=len(card["classes"]), weights="none")
    model.load_state_dict(read_state_dict(model_dir / WEIGHTS_FILE), strict=True)
    model.eval()
    codes = [c["code"] for c in card["classes"]]
    temperature = float(card.get("temperature") or 1.0)
    app = FastAPI()

    @app.get("/ready")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008 (the reference's style)
        image = Image.open(io.BytesIO(await file.read()))
        apply_draft(image, contract)  # the contract's pixels (jpeg_draft), as the API computes
        image = image.convert("RGB")
        with torch.no_grad():
            logits = model(torch.from_numpy(preprocess([image], contract))).numpy()
        probabilities = softmax(logits, temperature)[0]
        return {
            "predicted_class": codes[int(probabilities.argmax())],
            "probabilities": probabilities.tolist(),
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model_dir), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
