"""Export a trained model into a servable package (torch side; serving never imports this).

onnx: FeatureModel + ONNX export · parity: torch vs ONNX Runtime check · card: the model
card · package: build_package (docs/contracts.md) · atomic: directory swaps.
"""
