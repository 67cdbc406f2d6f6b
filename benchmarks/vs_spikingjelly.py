"""snn-compile against SpikingJelly 2.0's ann2snn on the same trained models: accuracy vs T.

    /root/.pyenv/versions/3.11.7/bin/python -m venv /work/sj-venv      # SpikingJelly 2.0 needs
    /work/sj-venv/bin/pip install --no-deps spikingjelly==2.0.0         # Python >= 3.11, torch
    /work/sj-venv/bin/pip install torch tqdm loguru requests "numpy<2" scipy   # >= 2.6
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.vs_spikingjelly \
        --sj-python /work/sj-venv/bin/python

Models (trained here in seconds on digits("train"); evaluated on the 540 digits("test") images;
architectures in ``benchmarks/models.py``): ``digits_cnn`` (examples/train_digits.py's
recipe), ``resnet`` (two residual blocks, 10 epochs), ``resnet_long`` (the same, 60 epochs:
larger activations, the issue's hard case), ``vgg_maxpool`` (two MaxPool2d, 12 epochs).
Each trained model is exported to ONNX for us and saved as a state dict for SpikingJelly, whose
runner (``sj2_runner.py``) runs in SpikingJelly's own venv in a subprocess, on the same 512
calibration and 540 test images.

Rows:
- ``snn-compile (tuned)``: no conversion flags at all, i.e. the tuned default: for each T in the
  table one ``snncompile.compile(..., timesteps=T)`` (tuning on held-out calibration samples,
  default budget of 8192 simulated samples), its accuracy at that T, the tuning time per T and,
  in the JSON, the simulated samples the tuning spent and the seconds the evaluation of the 540
  test images at that T took;
- ``snn-compile --no-tune``: the fixed default (p99.9 per layer, α = 0.5), one run to T = 64;
- ``snn-compile --channelwise --no-tune``: one threshold per channel, fixed;
- every SpikingJelly 2.0 recipe of ``sj2_runner.RECIPES`` (its example's mode sweep, its
  strongest channel-wise rate-coding options, and LocalThresholdBalancing).
The summary compares the tuned row with SpikingJelly's best recipe *per T, chosen on the test
set* (which flatters it) and with the ANN. ``--splits K`` repeats everything on K seeded splits
of digits (split s: ``digits(seed=s)``, models trained again from initial weights seed s; split
0 is the default run) and adds the comparison over the pooled K·540 test images, where one
image is 0.06 points instead of 0.19. img·steps/s: one run to T = 64 over the test set
(ours: the fixed default's run; SpikingJelly: its own loop), batch 256, one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import snncompile
from benchmarks import models as bench_models
from snncompile.data import digits

ROOT = Path(__file__).resolve().parents[1]

train_digits = bench_models.train_digits  # examples/train_digits.py
test_models = bench_models.tests  # tests/models.py

RESULTS = ROOT / "benchmarks" / "results"
T_REPORT = (4, 8, 16, 32, 64)
EPOCHS = {"resnet": 10, "resnet_long": 60, "vgg_maxpool": 12}
TUNED = "snn-compile (tuned)"


def train(name: str, split: int = 0) -> torch.nn.Module:
    """The model ``name`` trained on digits("train", seed=split); split 0 is the README's
    table, other splits also start from other initial weights (seed = split)."""
    if name == "digits_cnn":
        torch.manual_seed(split)
        tr = digits("train", seed=split)
        model = bench_models.digits_cnn()
        train_digits.train(model, tr.x, tr.y, epochs=40, seed=split)
        return model.eval()
    return test_models.trained(bench_models.ARCH[name], epochs=EPOCHS[name], seed=split,
                               data_seed=split)


def ann_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def ours(onnx: Path, cal: Any, te: Any, t_report: tuple[int, ...], batch: int) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    tuned, tune_s, chosen, cut, spent, eval_s = {}, {}, {}, {}, {}, {}
    for t in t_report:
        _, _, ctx = snncompile.convert(onnx, calibration=cal, timesteps=t)
        info = ctx.notes["tuning"]
        net = snncompile.compile(onnx, target="gpu", passes=snncompile.passes.split_pipeline(
            info["pipeline"]), calibration=cal.x, timesteps=t, device="cpu", batch_size=batch)
        t0 = time.perf_counter()
        tuned[t] = float(net.run(te.x, t, progress=False).accuracy_by_timestep(te.y)[-1])
        eval_s[t] = time.perf_counter() - t0
        tune_s[t], chosen[t], cut[t] = info["seconds"], info["pipeline"], info["cut_by_budget"]
        spent[t] = info["spent_samples"]
        print(f"  tuned T={t}: {tuned[t]:.4f} (tuning {info['seconds']:.1f} s, "
              f"{spent[t]} of {info['budget_samples']} simulated samples, {info['winner']}; "
              f"evaluation {eval_s[t]:.1f} s)", file=sys.stderr, flush=True)
    methods[TUNED] = {"accuracy_at": tuned, "tune_seconds": tune_s, "pipelines": chosen,
                      "cut_by_budget": cut, "tune_samples": spent, "eval_seconds": eval_s}
    steps = max(t_report)
    for label, kw in (("snn-compile --no-tune", {}),
                      ("snn-compile --channelwise --no-tune", {"channelwise": True})):
        net = snncompile.compile(onnx, target="gpu", calibration=cal.x, timesteps=steps,
                                 device="cpu", batch_size=batch, no_tune=True, **kw)
        t0 = time.perf_counter()
        acc = net.run(te.x, steps, progress=False).accuracy_by_timestep(te.y)
        sec = time.perf_counter() - t0
        methods[label] = {"accuracy_by_timestep": acc.tolist(), "seconds": sec,
                          "img_steps_per_s": len(te) * steps / sec}
    return methods


def acc_at(m: dict[str, Any], t: int) -> float | None:
    if "accuracy_at" in m:
        return m["accuracy_at"].get(t, m["accuracy_at"].get(str(t)))
    if "accuracy_by_timestep" in m and t <= len(m["accuracy_by_timestep"]):
        return m["accuracy_by_timestep"][t - 1]
    return None


def summarize(rows: list[dict[str, Any]], t_report: tuple[int, ...]) -> str:
    lines = ["| model | method | " + " | ".join(f"T={t}" for t in t_report)
             + " | img·steps/s | tuning s per T |", "|" + "---|" * (len(t_report) + 4)]
    for r in rows:
        lines.append(f"| {r['model']} | ANN | " + " | ".join(f"{r['ann_accuracy']:.4f}"
                                                           for _ in t_report) + " | | |")
        for meth, m in r["methods"].items():
            if "error" in m:
                lines.append(f"| {r['model']} | {meth} | failed: {m['error'][:60]} |")
                continue
            cells = " | ".join(f"{a:.4f}" if (a := acc_at(m, t)) is not None else ""
                               for t in t_report)
            speed = f"{m['img_steps_per_s']:,.0f}" if "img_steps_per_s" in m else ""
            ts = m.get("tune_seconds")
            tcell = (" / ".join(f"{v:.1f}" for v in ts.values()) if ts else "")
            lines.append(f"| {r['model']} | {meth} | {cells} | {speed} | {tcell} |")
    lines += ["", ("| model | tuned − best SpikingJelly recipe per T (+ = we win) | "
                   "tuned − ANN per T |"), "|---|---|---|"]
    for r in rows:
        tuned = r["methods"][TUNED]
        sj = [m for k, m in r["methods"].items() if k.startswith("spikingjelly") and
              "error" not in m]
        d_sj, d_ann = [], []
        for t in t_report:
            ours_t = acc_at(tuned, t)
            best = max((acc_at(m, t) or 0.0) for m in sj) if sj else float("nan")
            d_sj.append(f"T={t}: {ours_t - best:+.4f}")
            d_ann.append(f"{ours_t - r['ann_accuracy']:+.4f}")
        lines.append(f"| {r['model']} | {', '.join(d_sj)} | {', '.join(d_ann)} |")
    return "\n".join(lines)


def pooled(rows: list[dict[str, Any]], t_report: tuple[int, ...]) -> tuple[str, dict]:
    """Rows of several splits (each ``row["split"]``) -> per model and method the accuracy over
    the union of the splits' test sets (equal sizes: the mean), SpikingJelly's best recipe per
    T chosen on that union, and the tuned row's difference to it and to the ANN, in points and
    in test images."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    out: dict[str, Any] = {}
    lines = ["| model | splits · test images | tuned | best SpikingJelly recipe (chosen per T on "
             "the pooled test sets) | ANN | tuned − SJ best, points (images) | tuned − ANN, "
             "points (images) |", "|---|---|---|---|---|---|---|"]
    for name in models:
        rs = [r for r in rows if r["model"] == name]
        n = sum(r["samples"] for r in rs)
        ann = sum(r["ann_accuracy"] * r["samples"] for r in rs) / n
        meths = [k for k in rs[0]["methods"] if all(
            k in r["methods"] and "error" not in r["methods"][k] for r in rs)]
        acc = {k: {t: sum((acc_at(r["methods"][k], t) or 0.0) * r["samples"] for r in rs) / n
                   for t in t_report} for k in meths}
        sj = [k for k in meths if k.startswith("spikingjelly")]
        best = {t: max(sj, key=lambda k, t=t: acc[k][t]) for t in t_report} if sj else {}
        out[name] = {"samples": n, "splits": len(rs), "ann": ann, "accuracy": acc,
                     "sj_best": best}
        for t in t_report:
            d_sj = acc[TUNED][t] - acc[best[t]][t] if sj else float("nan")
            d_ann = acc[TUNED][t] - ann
            lines.append(f"| {name} T={t} | {len(rs)} · {n} | {acc[TUNED][t]:.4f} | "
                         + (f"{acc[best[t]][t]:.4f} ({best[t][len('spikingjelly '):]})"
                            if sj else "—")
                         + f" | {ann:.4f} | {100 * d_sj:+.2f} ({round(d_sj * n):+d}) | "
                           f"{100 * d_ann:+.2f} ({round(d_ann * n):+d}) |")
    return "\n".join(lines), out


def run_sj(sj_python: str, trained: dict[str, torch.nn.Module], cal: np.ndarray, te: Any,
           steps: int, batch: int, tmp: Path) -> dict[str, Any]:
    np.savez(tmp / "data.npz", cal_x=cal, test_x=te.x, test_y=te.y)
    job = {"data": str(tmp / "data.npz"), "timesteps": steps, "threads": 1, "batch": batch,
           "models": {}, "out": str(tmp / "sj.json")}
    for name, model in trained.items():
        torch.save(model.state_dict(), tmp / f"{name}.pt")
        job["models"][name] = str(tmp / f"{name}.pt")
    (tmp / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([sj_python, str(ROOT / "benchmarks" / "sj2_runner.py"),
                    str(tmp / "job.json")], check=True, env=env)
    return json.loads((tmp / "sj.json").read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits_cnn,resnet,resnet_long,vgg_maxpool")
    ap.add_argument("--sj-python", default="/work/sj-venv/bin/python",
                    help="Python of a venv with spikingjelly 2.0 ('' to skip SpikingJelly)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--splits", type=int, default=1,
                    help="train, calibrate and test on this many seeded splits of digits "
                         "(split s: digits(seed=s), initial weights seed s) and add the table "
                         "over their pooled test sets")
    ap.add_argument("--out", type=Path, default=RESULTS / "vs_spikingjelly.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = a.models.split(",")
    t_report = T_REPORT
    t_start = time.perf_counter()
    rows = []
    sj: dict[str, Any] = {"models": {}}
    for split in range(a.splits):
        tr, te = digits("train", seed=split), digits("test", seed=split)
        cal = tr.take(512)  # what `snn-compile --dataset digits` calibrates on
        trained = {n: train(n, split) for n in names}
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            sj = (run_sj(a.sj_python, trained, cal.x, te, max(t_report), a.batch, tmp)
                  if a.sj_python else {"models": {}})
            for name in names:
                print(f"{name} (split {split}):", file=sys.stderr, flush=True)
                onnx = test_models.export(trained[name], tmp / f"{name}.onnx")
                row = {"model": name, "split": split,
                       "ann_accuracy": ann_accuracy(trained[name], te.x, te.y),
                       "samples": len(te),
                       "methods": ours(onnx, cal, te, t_report, a.batch)}
                for k, m in sj["models"].get(name, {}).items():
                    row["methods"][f"spikingjelly {k}"] = m
                rows.append(row)
    text = "\n\n".join(summarize([r for r in rows if r["split"] == s], t_report)
                       if a.splits == 1 else f"split {s}:\n\n"
                       + summarize([r for r in rows if r["split"] == s], t_report)
                       for s in range(a.splits))
    pooled_text, pooled_rows = pooled(rows, t_report) if a.splits > 1 else ("", {})
    if pooled_text:
        text += "\n\nPooled over the splits:\n\n" + pooled_text
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    info = {"benchmark": "vs_spikingjelly",
            "peer": f"spikingjelly {sj.get('spikingjelly')} (torch {sj.get('torch')}, its own "
                    "Python 3.11 venv), ann2snn.FXConverter recipes",
            "ours": "snn-compile without conversion flags (tuned per T), and the fixed defaults",
            "threads": 1, "batch": a.batch, "calibration": 512,
            "machine": {"platform": platform.platform(), "torch": torch.__version__,
                        "cpu_count": os.cpu_count()},
            "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.vs_spikingjelly",
                                 *sys.argv[1:]]),
            "seconds": time.perf_counter() - t_start,
            "load_average_at_end": os.getloadavg(), "table": text, "splits": a.splits,
            "pooled": pooled_rows, "rows": rows}
    a.out.write_text(json.dumps(info, indent=1, default=str) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
