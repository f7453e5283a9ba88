"""Importers that build forward-only qtrain IR: ONNX models and the reference .pkl models."""
