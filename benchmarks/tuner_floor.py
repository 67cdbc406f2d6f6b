"""Where the tuner's search pays: the fixed default's loss on the search samples against what
the full search changed on test images (the evidence for ``pipeline_search.LOSS_FLOOR``).

    .venv/bin/python -m benchmarks.tuner_floor [--floor 0]

For each digits model of ``benchmarks/vs_spikingjelly.py`` (trained here, split 0) and T in
4..64: ``tune`` with its default budget (no evaluation size: the compute cap), then the test
accuracy (540 digits) of the tuned pipeline and of the fixed default (``no_tune``). The row
gives the default's mean loss log(1 + KL) on the search samples (``scores[0]``), which the
floor compares. ``--floor 0`` (the default here) turns the floor off so that every cell
searches (the measurement needs the search's result where the floor would skip it).
Writes benchmarks/results/tuner_floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

import snncompile
import snncompile.pipeline_search as search
from benchmarks import vs_spikingjelly as vs
from snncompile.data import digits

OUT = Path(__file__).resolve().parent / "results" / "tuner_floor.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--floor", type=float, default=0.0)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(1)
    search.LOSS_FLOOR = a.floor
    tr, te = digits("train"), digits("test")
    cal = tr.take(512)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in ("digits_cnn", "resnet", "resnet_long", "vgg_maxpool"):
            onnx = vs.test_models.export(vs.train(name), Path(d) / f"{name}.onnx")
            for t in vs.T_REPORT:
                _, _, ctx = snncompile.convert(onnx, calibration=cal, timesteps=t)
                info = ctx.notes["tuning"]
                acc = {}
                for label, kw in (("tuned", {"passes": snncompile.passes.split_pipeline(
                        info["pipeline"])}), ("default", {"no_tune": True})):
                    net = snncompile.compile(onnx, target="gpu", calibration=cal.x,
                                             timesteps=t, device="cpu", **kw)
                    acc[label] = float(net.run(te.x, t, progress=False)
                                       .accuracy_by_timestep(te.y)[-1])
                first = info["scores"][0]
                rows.append({"model": name, "T": t, "default_search_loss": first["loss"],
                             "search_samples": first["samples"], "winner": info["winner"],
                             "tune_seconds": info["seconds"], **acc,
                             "pipeline": info["pipeline"]})
                print(f"{name} T={t}: default loss {first['loss']:.2e}, tuned {acc['tuned']:.4f}"
                      f", default {acc['default']:.4f}, {info['seconds']:.1f} s", flush=True)
    a.out.write_text(json.dumps({
        "benchmark": "tuner_floor", "floor": a.floor, "rows": rows,
        "command": "python -m benchmarks.tuner_floor", "threads": 1,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "load_average_at_end": os.getloadavg()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
