"""ONNX frontend: ``load_onnx`` (ONNX -> verified IR, ANN form) and ``run_onnxruntime``
(the reference the IR's ANN mode is checked against)."""

from __future__ import annotations

from snncompile.frontend.onnx_import import load_onnx, read_model, run_onnxruntime
from snncompile.frontend.op_table import supported_ops

__all__ = ["load_onnx", "read_model", "run_onnxruntime", "supported_ops"]
