"""Data for calibration and evaluation: ``.npz`` files with ``x`` (N, C, H, W) float32 and
``y`` (N,) int, or the bundled ``digits`` dataset (scikit-learn, 1×8×8 in [0, 1])."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic

DATASETS = ("digits",)


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (N, C, H, W) float32
    y: np.ndarray | None  # (N,) int64, or None when the file has no labels
    source: str

    def __len__(self) -> int:
        return len(self.x)

    def take(self, n: int | None, offset: int = 0) -> Dataset:
        if n is None:
            return self
        from snncompile import validate

        n = validate.integer(n, "samples", minimum=1)
        sl = slice(offset, offset + n)
        return Dataset(self.x[sl], None if self.y is None else self.y[sl], self.source)


def digits(split: str = "all", seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 digits as (N, 1, 8, 8) in [0, 1].

    ``split``: "train" (first 70 % of a fixed seeded shuffle), "test" (the other 30 %), "all".
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.7 * len(x))
    if split == "train":
        idx = idx[:cut]
    elif split == "test":
        idx = idx[cut:]
    elif split != "all":
        raise ValueError(f"unknown split {split!r}")
    return Dataset(x[idx], y[idx], f"digits:{split}")


def load_npz(path: str | Path, *, need_labels: bool = False) -> Dataset:
    """Read and check a data file; every problem is a one-line CompileError."""
    from snncompile import validate

    p = validate.data_file(path)  # file type and declared sizes, from the headers only
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = set(f.files)
            if "x" not in keys:
                raise CompileError("wrong data file", [Diagnostic(
                    f"{p}: no array 'x' (has: {', '.join(sorted(keys)) or 'nothing'})",
                    hint="expected x (N, C, H, W) float32 and y (N,) int")])
            x = np.asarray(f["x"])
            y = np.asarray(f["y"]) if "y" in keys else None
    except CompileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CompileError("cannot read data file", [Diagnostic(f"{p}: {e}")]) from None
    if x.dtype.kind not in "fiu" or x.ndim < 2:
        raise CompileError("wrong data file", [Diagnostic(
            f"{p}: x has dtype {x.dtype} and shape {x.shape}; expected float (N, C, H, W)")])
    x = validate.samples(x, f"{p}: x")
    if y is not None:
        y = validate.labels(y, len(x), None, f"{p}: y")
    elif need_labels:
        raise CompileError("wrong data file", [Diagnostic(f"{p}: no labels 'y' for evaluation")])
    return Dataset(x, y, str(p))


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray | None = None) -> None:
    arrays = {"x": np.asarray(x, np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, np.int64)
    np.savez(path, **arrays)
