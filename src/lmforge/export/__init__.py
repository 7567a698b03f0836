"""Exporting trained runs for fast inference (`lmforge export`): ONNX with fused attention and
optional dynamic int8 quantization, checked against the PyTorch model before anything is written."""
