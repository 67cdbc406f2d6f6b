"""Training helpers for ANNs that convert well: quantized clip-floor-shift activations (QCFS).

See ``snncompile.qat.quant`` for the math and the train → quantize → fine-tune → export recipe.
"""

from __future__ import annotations

from snncompile.qat.quant import QuantReLU, quant_parameters, quantize_relus

__all__ = ["QuantReLU", "quant_parameters", "quantize_relus"]
