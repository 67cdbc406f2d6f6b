"""Run SpikingJelly 2.0's ann2snn recipes on our trained models (inside SpikingJelly's venv).

    /work/sj-venv/bin/python benchmarks/sj2_runner.py JOB.json

JOB.json: {"data": "d.npz" (cal_x, test_x, test_y), "timesteps": T, "threads": n, "batch": B,
"models": {name: "state_dict.pt"}, "out": "result.json"}. For every model and recipe: convert
with ``ann2snn.FXConverter(recipe)`` and evaluate as SpikingJelly's own example
(``examples/cnn_mnist.py``) does: ``reset_net``, then per step ``out += snn(x)``; the prediction
at t is the argmax of the accumulated output. Recipes: RateCodingRecipe with mode "max",
"99.9%", 1/2, 1/3 (the example's mode sweep), RateCodingRecipe(99.9%, channel_wise,
pre_spike_maxpool, half_threshold) (its strongest rate-coding options), and
LocalThresholdBalancingRecipe (Bu et al., CVPR 2025). Calibration batches of 100, as in the
example. Torch only: this file imports nothing from snncompile.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models

RECIPES = {
    "rate max": {"mode": "max"},
    "rate 99.9%": {"mode": "99.9%"},
    "rate 0.5": {"mode": 0.5},
    "rate 1/3": {"mode": 1.0 / 3},
    "rate 99.9% channel-wise+pre-spike maxpool+half threshold": {
        "mode": "99.9%", "channel_wise": True, "pre_spike_maxpool": True,
        "half_threshold": True},
    "local threshold balancing": None,
}


def make_recipe(key: str, loader):
    from spikingjelly.activation_based import ann2snn

    if RECIPES[key] is None:
        return ann2snn.LocalThresholdBalancingRecipe(dataloader=loader)
    return ann2snn.RateCodingRecipe(dataloader=loader, **RECIPES[key])


@torch.no_grad()
def evaluate(snn: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int,
             batch: int) -> np.ndarray:
    from spikingjelly.activation_based import functional

    correct = np.zeros(steps)
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch])
        functional.reset_net(snn)
        out = None
        for t in range(steps):
            step = snn(xb)
            out = step if out is None else out + step
            correct[t] += float((out.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(int(job.get("threads", 1)))
    d = np.load(job["data"])
    cal, x, y = d["cal_x"], d["test_x"], d["test_y"]
    ds = torch.utils.data.TensorDataset(torch.from_numpy(cal), torch.zeros(len(cal)))
    loader = torch.utils.data.DataLoader(ds, batch_size=100, shuffle=False)
    from importlib.metadata import version

    from spikingjelly.activation_based import ann2snn

    out: dict = {"spikingjelly": version("spikingjelly"), "torch": torch.__version__,
                 "models": {}}
    for name, sd_path in job["models"].items():
        model = bench_models.ARCH[name]()
        model.load_state_dict(torch.load(sd_path))
        model.eval()
        rows = {}
        for key in RECIPES:
            try:
                t0 = time.perf_counter()
                snn = ann2snn.FXConverter(recipe=make_recipe(key, loader), device="cpu").convert(
                    copy.deepcopy(model))
                conv_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                acc = evaluate(snn.eval(), x, y, int(job["timesteps"]), int(job["batch"]))
                sim_s = time.perf_counter() - t0
                rows[key] = {"accuracy_by_timestep": acc.tolist(), "convert_seconds": conv_s,
                             "seconds": sim_s,
                             "img_steps_per_s": len(x) * int(job["timesteps"]) / sim_s}
            except Exception as e:  # noqa: BLE001  (a recipe that cannot convert a model is reported)
                rows[key] = {"error": f"{type(e).__name__}: {e}"}
            print(f"sj2 {name} {key}: " + (f"T=max {rows[key]['accuracy_by_timestep'][-1]:.4f}"
                                            if "error" not in rows[key] else rows[key]["error"]),
                  file=sys.stderr, flush=True)
        out["models"][name] = rows
    Path(job["out"]).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
