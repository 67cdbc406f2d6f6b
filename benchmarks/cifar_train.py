"""Train the CIFAR-10 networks of ``benchmarks/cifar.py`` on the JPEG copy of CIFAR-10.

    python benchmarks/cifar_train.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--work DIR]

``--data``: the ``.tar.gz`` (extracted into ``--work``) or an extracted ImageFolder root
(``train/<class>/*.jpg``, ``test/<class>/*.jpg``). Everything it writes goes to ``--work``
(default ``~/.cache/snncompile/cifar10``, outside the repository: nothing derived from the data
is committed): the decoded images as uint8 arrays, a checkpoint and an ONNX export per network.
A network whose checkpoint exists is not trained again; the runs are seeded, so a rerun on the
same machine type reproduces them.

Networks (``snncompile.zoo``, exported as written with torch's TorchScript exporter, opset 17):

- ``resnet20a``: He et al.'s ResNet-20 with option-A shortcuts (strided Slice + channel Pad);
- ``vgg11``: VGG-11 with BatchNorm and 2×2 MaxPool, channels × ``--vgg-width``;
- ``resnet20a_qcfs4``: ``resnet20a`` with every ReLU replaced by a QCFS activation with L = 4
  levels (``snncompile.qat.quantize_relus``), fine-tuned.

Recipe: SGD (momentum 0.9, Nesterov, weight decay 5e-4), one-cycle learning rate (peak 0.1),
batch 128, random crop with 4-pixel padding and horizontal flips; inputs normalised with the
CIFAR-10 mean/std of ``--preprocess cifar10``. On a CPU with AMX/AVX-512 bf16 the forward and
backward passes run under bf16 autocast (ResNet-20: ~60 s an epoch on 2 cores), on other CPUs
in float32 (~160 s an epoch on 2 AMD EPYC cores); on CUDA under fp16 autocast. The JPEG copy
costs accuracy against the PNG originals (the issue: ~10 points for a net trained on the
originals); these networks are trained and tested on the JPEGs.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from snncompile import zoo
from snncompile.data import PRESETS
from snncompile.qat import quantize_relus

MEAN = np.asarray(PRESETS["cifar10"].mean, np.float32).reshape(1, 3, 1, 1)
STD = np.asarray(PRESETS["cifar10"].std, np.float32).reshape(1, 3, 1, 1)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
DEFAULT_WORK = Path.home() / ".cache" / "snncompile" / "cifar10"
VGG_WIDTH = 0.25  # VGG-11 channels x 0.25 (16 .. 128): ~10 M MACs, trains on a CPU


def image_root(data: Path, work: Path) -> Path:
    """The ImageFolder root: ``data`` itself, or ``data`` (a .tar.gz) extracted into ``work``."""
    if data.is_dir():
        return data
    root = work / "jpeg"
    if not (root / "test").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(data) as tar:
            tar.extractall(root, filter="data")
    if (root / "test").is_dir():
        return root
    inner = [d for d in root.iterdir() if (d / "test").is_dir()]
    return inner[0]


def decoded(root: Path, split: str, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 images and (N,) labels of ``root/split``, cached in ``work``."""
    cache = work / f"{split}-uint8.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["x"], z["y"]
    from PIL import Image

    classes = sorted(d.name for d in (root / split).iterdir() if d.is_dir())
    xs, ys = [], []
    for label, c in enumerate(classes):
        for f in sorted((root / split / c).iterdir()):
            with Image.open(f) as im:
                xs.append(np.asarray(im.convert("RGB"), np.uint8))
            ys.append(label)
    x, y = np.stack(xs), np.asarray(ys, np.int64)
    np.savez(cache, x=x, y=y)
    return x, y


def normalise(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W), as ``--preprocess cifar10`` computes it."""
    a = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return np.ascontiguousarray((a - MEAN) / STD)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random 32×32 crop of the 4-pixel zero-padded image and a random horizontal flip."""
    n = x.shape[0]
    p = F.pad(x, (4, 4, 4, 4))
    i = torch.randint(0, 9, (n,), generator=g)
    j = torch.randint(0, 9, (n,), generator=g)
    rows = (i[:, None] + torch.arange(32))[:, None, :, None].expand(n, 3, 32, 40)
    out = torch.gather(p, 2, rows)
    cols = (j[:, None] + torch.arange(32))[:, None, None, :].expand(n, 3, 32, 32)
    out = torch.gather(out, 3, cols)
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: str) -> float:
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), 500):
            xb = torch.from_numpy(x[i:i + 500]).to(device)
            hits += int((model(xb).argmax(1).cpu().numpy() == y[i:i + 500]).sum())
    return 100.0 * hits / len(x)


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float,
          device: str, seed: int, partial: Path | None = None) -> None:
    """SGD with a one-cycle schedule; the weights after each epoch go to ``partial``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.25)
    if device == "cuda":
        amp = dict(device_type="cuda", dtype=torch.float16)
    else:
        # bf16 only where the CPU computes it (AVX-512 bf16 / AMX): elsewhere oneDNN emulates
        # it, 15x slower than float32 (AMD EPYC without avx512_bf16: 6.2 s against 0.41 s a
        # ResNet-20 step of 128 images on 2 cores)
        amp = dict(device_type="cpu", dtype=torch.bfloat16,
                   enabled=torch.backends.mkldnn.is_available()
                   and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    scaler = torch.amp.GradScaler(enabled=device == "cuda")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        bar = tqdm(range(len(x) // 128), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for b in bar:
            idx = order[b * 128:(b + 1) * 128]
            xb = augment(xt[idx], g).to(device)
            with torch.autocast(**amp):
                loss = F.cross_entropy(model(xb), yt[idx].to(device))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if b % 50 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}")
        if partial is not None:
            torch.save(model.state_dict(), partial)


def export(model: torch.nn.Module, path: Path) -> None:
    model.eval().cpu()
    torch.onnx.export(model, torch.zeros(1, 3, 32, 32), str(path), opset_version=17,
                      dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def build(name: str, args: argparse.Namespace, work: Path, data: tuple) -> dict:
    """Train (or load) network ``name``; write ``name.pt`` and ``name.onnx`` in ``work``."""
    xtr, ytr, xte, yte = data
    ckpt, onnx_path = work / f"{name}.pt", work / f"{name}.onnx"
    if name == "resnet20a":
        model = zoo.cifar_resnet(20, "A", seed=args.seed)
    elif name == "vgg11":
        model = zoo.cifar_vgg("vgg11", width=args.vgg_width, seed=args.seed)
    else:
        model = zoo.cifar_resnet(20, "A", seed=args.seed)
        quantize_relus(model, levels=4)
    t0 = time.time()
    if ckpt.exists():
        model.load_state_dict(torch.load(ckpt, map_location="cpu"))
    elif name == "resnet20a_qcfs4":
        if not (work / "resnet20a.pt").exists():
            build("resnet20a", args, work, data)
        model = zoo.cifar_resnet(20, "A")
        model.load_state_dict(torch.load(work / "resnet20a.pt", map_location="cpu"))
        quantize_relus(model, levels=4, sample=torch.from_numpy(xtr[:512]))
        model.to(args.device)
        train(model, xtr, ytr, args.qcfs_epochs, args.lr / 10, args.device, args.seed,
              work / f"{name}.partial.pt")
        torch.save(model.cpu().state_dict(), ckpt)
    else:
        model.to(args.device)
        epochs = args.resnet_epochs if name == "resnet20a" else args.vgg_epochs
        train(model, xtr, ytr, epochs, args.lr, args.device, args.seed,
              work / f"{name}.partial.pt")
        torch.save(model.cpu().state_dict(), ckpt)
    seconds = time.time() - t0
    acc = accuracy(model.to(args.device), xte, yte, args.device)
    export(model, onnx_path)
    info = {"network": name, "test_accuracy": acc, "train_seconds": round(seconds, 1),
            "onnx": str(onnx_path)}
    print(json.dumps(info))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--nets", nargs="+", default=["resnet20a", "vgg11", "resnet20a_qcfs4"],
                    choices=["resnet20a", "vgg11", "resnet20a_qcfs4"])
    ap.add_argument("--resnet-epochs", type=int, default=8)
    ap.add_argument("--vgg-epochs", type=int, default=8)
    ap.add_argument("--qcfs-epochs", type=int, default=2)
    ap.add_argument("--vgg-width", type=float, default=VGG_WIDTH)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    root = image_root(args.data, args.work)
    xtr, ytr = decoded(root, "train", args.work)
    xte, yte = decoded(root, "test", args.work)
    data = (normalise(xtr), ytr, normalise(xte), yte)
    results = [build(n, args, args.work, data) for n in args.nets]
    (args.work / "train.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
