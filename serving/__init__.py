"""SkinDX serving API (FastAPI + ONNX Runtime). Never imports torch."""
