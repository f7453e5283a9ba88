"""Lowerings of qtrain IR to other forms: the C / LLVM IR emitter (`emit_c.py`) and the ONNX QOperator
exporter (`onnx_export.py`)."""
