"""Deprecated name of ``snncompile.qat`` (quantization-aware training of the ANN, before
export): ``snncompile.train.QuantReLU`` is ``snncompile.qat.QuantReLU``. Kept so that code and
pickled models that name ``snncompile.train`` or ``snncompile.train.quant`` still load."""

import sys
import warnings

from snncompile.qat import QuantReLU, quant, quant_parameters, quantize_relus

sys.modules[__name__ + ".quant"] = quant  # torch.load of a model pickled with the old path
warnings.warn("snncompile.train is deprecated: use snncompile.qat", DeprecationWarning,
              stacklevel=2)

__all__ = ["QuantReLU", "quant_parameters", "quantize_relus"]
