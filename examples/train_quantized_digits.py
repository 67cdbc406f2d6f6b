"""Train a quantized (QCFS) version of the digits CNN and export it to ONNX.

    .venv/bin/python examples/train_quantized_digits.py --levels 4   # examples/digits_cnn_q4.onnx

Same architecture as ``examples/train_digits.py`` (its ``build()``). Recipe
(``snncompile.qat.quant``): train the float ANN, swap every ReLU for ``QuantReLU(L)`` with λ
initialised at the 99th percentile of that ReLU's output, fine-tune a few epochs at a lower
learning rate, export. Fixed seed; a few seconds on a 2-core CPU. The first Conv's ReLU, the
second's and the hidden Linear's each become one quantized activation with L levels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.train_digits import build, export, train  # noqa: E402
from snncompile.data import digits  # noqa: E402
from snncompile.qat import quant_parameters, quantize_relus  # noqa: E402


def finetune(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    """Adam at 1e-3 (cosine), no weight decay on λ, same 1-pixel-shift augmentation."""
    lam = set(map(id, quant_parameters(model)))
    weights = [p for p in model.parameters() if id(p) not in lam]
    opt = torch.optim.Adam([{"params": weights, "weight_decay": 1e-4},
                            {"params": list(quant_parameters(model)), "weight_decay": 0.0}],
                           lr=1e-3)
    train(model, x, y, epochs, seed + 1, opt=opt)


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, default=4, help="L, quantization levels (default 4)")
    ap.add_argument("--out", type=Path, default=None,
                    help="ONNX file (default examples/digits_cnn_q{L}.onnx)")
    ap.add_argument("--epochs", type=int, default=40, help="float ANN training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = a.out or Path(__file__).with_name(f"digits_cnn_q{a.levels}.onnx")
    torch.manual_seed(a.seed)
    tr, te = digits("train", seed=0), digits("test", seed=0)
    model = build()
    train(model, tr.x, tr.y, a.epochs, a.seed)
    acc_float = accuracy(model, te.x, te.y)
    quantize_relus(model, a.levels, sample=torch.from_numpy(tr.x[:512]))
    acc_swap = accuracy(model, te.x, te.y)
    finetune(model, tr.x, tr.y, a.finetune_epochs, a.seed)
    acc_q = accuracy(model, te.x, te.y)
    export(model, out)
    bounds = ", ".join(f"{float(p.detach()[0]):.3f}" for p in quant_parameters(model))
    print(f"float ANN test accuracy {acc_float:.4f}; "
          f"after swapping to L={a.levels}: {acc_swap:.4f}; "
          f"after fine-tuning: {acc_q:.4f} on {len(te)} samples; λ = [{bounds}]; wrote {out} "
          f"({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
