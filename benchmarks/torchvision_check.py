"""torchvision architectures through the frontend: does ``--check`` pass, or why is it refused?

    .venv/bin/python -m benchmarks.torchvision_check [--size 64] [--models densenet121,googlenet]

Each model is built with random weights (``weights=None``, seed 0), exported with the
TorchScript exporter at opset 17 on a 1×3×S×S input (dynamic batch axis; a model written
``name@S:dynamo`` uses that size and the dynamo exporter at opset 18: VGG at 32×32, whose
AdaptiveAvgPool2d 1×1 -> 7×7 the TorchScript exporter cannot export at all), imported with
``snncompile.load_onnx`` and compared with onnxruntime on 4 random inputs (the CLI's ``--check``:
relative error of the IR's ANN execution, limit 1e-4). A refusal is recorded with its one-line
message. Writes benchmarks/results/torchvision_check.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from snncompile.frontend import load_onnx, run_onnxruntime
from snncompile.interp import run_ann
from snncompile.ir.diagnostics import CompileError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ("densenet121", "googlenet", "resnet18", "mobilenet_v2", "squeezenet1_0",
           "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0", "vgg11_bn@32:dynamo")


def build(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(weights=None, **kw).eval()


def check(spec: str, size: int, tmp: Path) -> dict:
    name, _, rest = spec.partition("@")
    dynamo = rest.endswith(":dynamo")
    size = int(rest.split(":")[0]) if rest else size
    path = tmp / f"{name}.onnx"
    t0 = time.perf_counter()
    if dynamo:
        torch.onnx.export(build(name), (torch.zeros(2, 3, size, size),), str(path),
                          input_names=["input"], opset_version=18, dynamo=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        torch.onnx.export(build(name), (torch.zeros(1, 3, size, size),), str(path),
                          input_names=["input"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}})
    row: dict = {"model": name, "size": size, "exporter": "dynamo, opset 18" if dynamo else
                 "torchscript, opset 17", "export_s": round(time.perf_counter() - t0, 2)}
    t0 = time.perf_counter()
    try:
        g = load_onnx(path)
    except CompileError as e:
        row.update(result="refused", message=e.one_line(),
                   import_s=round(time.perf_counter() - t0, 2))
        return row
    row["import_s"] = round(time.perf_counter() - t0, 2)
    x = np.random.default_rng(0).standard_normal((4, 3, size, size)).astype(np.float32)
    ours, ref = run_ann(g, x), run_onnxruntime(path, x)
    err = float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-12))
    row.update(result="OK" if err <= 1e-4 else "MISMATCH", rel_err=err,
               argmax_agree=float(np.mean(ours.argmax(1) == ref.argmax(1))),
               ir_ops=len(g.names()))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--models", default=",".join(DEFAULT))
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for spec in args.models.split(","):
        rows.append(r := check(spec, args.size, tmp))
        print(json.dumps(r)[:300], flush=True)
        (tmp / f"{r['model']}.onnx").unlink(missing_ok=True)
    load = os.getloadavg()
    out = {"rows": rows, "torch_threads": 2, "loadavg": load}
    dest = ROOT / "benchmarks" / "results" / "torchvision_check.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nload average {load[0]:.1f}, 2 threads\n")
    print("| model | input | exporter | result | rel. error / message |")
    print("|---|---|---|---|---|")
    for r in rows:
        what = f"{r['rel_err']:.1e}" if "rel_err" in r else r["message"][:160] + "…"
        print(f"| {r['model']} | 3×{r['size']}×{r['size']} | {r['exporter']} | {r['result']} "
              f"| {what} |")


if __name__ == "__main__":
    main()
