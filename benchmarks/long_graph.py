"""Pass pipeline on long graphs: a chain of n Identity nodes between two layers (issue 13).

    .venv/bin/python -m benchmarks.long_graph            # n = 1000, 3000, 10000

The model: Flatten → MatMul (64→16) → n × Identity → Relu → MatMul (16→10), opset 17, built
with onnx.helper. Measured in-process: ``load_onnx`` (frontend) and ``snncompile.convert``
(the default gpu pipeline with 32 calibration samples), wall time and the number of shape
inferences / topological sorts (``snncompile.ir.graph.COUNTERS``). Before issue 13 every
removed Identity re-inferred the shapes of the whole rest of the chain (O(n²): the issue
measured 18 s for n = 1000 and more than 120 s for n = 3000 through the CLI).
Writes benchmarks/results/long_graph.json (with the machine's load and torch threads).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

import snncompile
from snncompile.frontend import load_onnx
from snncompile.ir import graph as irgraph

ROOT = Path(__file__).resolve().parents[1]


def chain(n: int):
    w1 = numpy_helper.from_array(np.eye(64, 16, dtype=np.float32), "w1")
    w2 = numpy_helper.from_array(np.eye(16, 10, dtype=np.float32), "w2")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("MatMul", ["f", "w1"], ["h0"])]
    nodes += [helper.make_node("Identity", [f"h{i}"], [f"h{i + 1}"]) for i in range(n)]
    nodes += [helper.make_node("Relu", [f"h{n}"], ["r"]),
              helper.make_node("MatMul", ["r", "w2"], ["y"])]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, 1, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [None, 10])], [w1, w2])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    x = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
    rows = []
    for n in (1000, 3000, 10000):
        m = chain(n)
        t0 = time.perf_counter()
        g = load_onnx(m)
        t1 = time.perf_counter()
        before = dict(irgraph.COUNTERS)
        snncompile.convert(g, calibration=x)
        t2 = time.perf_counter()
        rows.append({"identity_nodes": n, "load_seconds": t1 - t0, "convert_seconds": t2 - t1,
                     "shape_inferences": irgraph.COUNTERS["infer"] - before["infer"],
                     "topological_sorts": irgraph.COUNTERS["topo"] - before["topo"]})
        print(rows[-1], flush=True)
    out = {"machine": platform.platform(), "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "torch_threads": torch.get_num_threads(),
           "rows": rows}
    (ROOT / "benchmarks" / "results" / "long_graph.json").write_text(json.dumps(out, indent=1))
    print("| Identity nodes | load (s) | convert (s) | shape inferences | topo sorts |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['identity_nodes']} | {r['load_seconds']:.2f} | {r['convert_seconds']:.2f} | "
              f"{r['shape_inferences']} | {r['topological_sorts']} |")


if __name__ == "__main__":
    main()
