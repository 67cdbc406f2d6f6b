"""Data for calibration and evaluation.

In memory (``Dataset``): ``.npz`` files with ``x`` (N, C, H, W) float32 and ``y`` (N,) int, or
the bundled ``digits`` dataset (scikit-learn, 1×8×8 in [0, 1]).

Streaming (``Source``, from ``open_data``): an image folder (one subfolder per class, the layout
of ImageNet and torchvision's ImageFolder; classes are the sorted subfolder names, labels their
indices), or ``module:callable`` returning a map-style torch ``Dataset`` whose items are ``x`` or
``(x, y)``. A source is read in batches through a torch ``DataLoader`` (``workers`` processes
decode ahead while the simulator runs), so nothing holds the whole set. Under ``torchrun`` each
rank reads only its block of batches (``snncompile.distributed.shard``).

Image preprocessing (``Preprocess``, Pillow; no torchvision): colour mode (``rgb`` or ``gray``;
default from the model's input channels), resize of the shorter side to ``resize`` (bilinear),
center crop to ``crop``, x = (pixel/255 − mean)/std per channel. Presets: ``none`` (pixels/255),
``imagenet`` (resize 256, crop 224, RGB, ImageNet mean/std), ``cifar10`` (RGB, CIFAR-10
mean/std), ``mnist`` (gray, MNIST mean/std).
"""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
            x = _member(f, "x", p)
            y = _member(f, "y", p) if "y" in keys else None
    except CompileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CompileError("cannot read data file", [Diagnostic(
            f"{p}: {validate.one_line(e)}")]) from None
    if x.dtype.kind not in "fiu" or x.ndim < 2:
        raise CompileError("wrong data file", [Diagnostic(
            f"{p}: x has dtype {x.dtype} and shape {x.shape}; expected float (N, C, H, W)")])
    x = validate.samples(x, f"{p}: x")
    if y is not None:
        y = validate.labels(y, len(x), None, f"{p}: y")
    elif need_labels:
        raise CompileError("wrong data file", [Diagnostic(f"{p}: no labels 'y' for evaluation")])
    return Dataset(x, y, str(p))


def _member(f: Any, key: str, p: Path) -> np.ndarray:
    """Array ``key`` of the open npz ``f``; a member that cannot be read (truncated, a bad
    CRC, a corrupt deflate stream, a header numpy refuses) is one CompileError naming the
    file and the member."""
    from snncompile import validate

    try:
        return np.asarray(f[key])
    except Exception as e:  # noqa: BLE001 - zipfile, zlib and numpy raise many types here
        raise CompileError("cannot read data file", [Diagnostic(
            f"{p}: member {key}.npy: {validate.one_line(e)}")]) from None


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray | None = None) -> None:
    arrays = {"x": np.asarray(x, np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, np.int64)
    np.savez(path, **arrays)


# ------------------------------------------------------------------------------ streaming sources
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff",
                    ".webp")


@dataclass(frozen=True)
class Preprocess:
    """Image -> (C, H, W) float32: colour mode, shorter side to ``resize`` (bilinear), center
    crop to ``crop`` (H, W), x = (pixel/255 − mean)/std per channel."""

    color: str | None = None  # "rgb" | "gray"; None: from the model's input channels
    resize: int | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __call__(self, path: str) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("L" if self.color == "gray" else "RGB")
            if self.resize is not None:
                w, h = im.size
                s = self.resize / min(w, h)
                im = im.resize((max(1, round(w * s)), max(1, round(h * s))),
                               Image.Resampling.BILINEAR)
            if self.crop is not None:
                ch, cw = self.crop
                w, h = im.size
                left, top = int(round((w - cw) / 2.0)), int(round((h - ch) / 2.0))
                im = im.crop((left, top, left + cw, top + ch))
            a = np.asarray(im, np.float32) / 255.0
        a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
        c = a.shape[0]
        mean = np.asarray(self.mean if len(self.mean) == c else self.mean[:1] * c, np.float32)
        std = np.asarray(self.std if len(self.std) == c else self.std[:1] * c, np.float32)
        return np.ascontiguousarray((a - mean.reshape(-1, 1, 1)) / std.reshape(-1, 1, 1))


PRESETS: dict[str, Preprocess] = {
    "none": Preprocess(),
    "imagenet": Preprocess(color="rgb", resize=256, crop=(224, 224),
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    "cifar10": Preprocess(color="rgb", mean=(0.4914, 0.4822, 0.4465),
                          std=(0.2470, 0.2435, 0.2616)),
    "mnist": Preprocess(color="gray", mean=(0.1307,), std=(0.3081,)),
}


def preprocess_from(preset: str = "none", *, color: str | None = None, resize: int | None = None,
                    crop: Sequence[int] | int | None = None, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None,
                    input_shape: Sequence[int] | None = None) -> Preprocess:
    """A preset with flags on top; the colour mode defaults to the model's input channels and
    the crop, when neither resize nor crop is given, to the model's input size."""
    if preset not in PRESETS:
        raise CompileError("unknown preprocessing preset", [Diagnostic(
            repr(preset), hint=f"presets: {', '.join(PRESETS)}")])
    p = PRESETS[preset]
    if isinstance(crop, int):
        crop = (crop, crop)
    kw: dict[str, Any] = {k: v for k, v in (("color", color), ("resize", resize),
                                            ("crop", tuple(crop) if crop else None),
                                            ("mean", tuple(mean) if mean else None),
                                            ("std", tuple(std) if std else None)) if v is not None}
    p = replace(p, **kw)
    if input_shape is not None and len(input_shape) == 3:
        if p.color is None:
            p = replace(p, color="gray" if input_shape[0] == 1 else "rgb")
        if p.crop is None and p.resize is None:
            p = replace(p, crop=(int(input_shape[1]), int(input_shape[2])))
    for name in ("mean", "std"):
        v = getattr(p, name)
        if len(v) not in (1, 1 if p.color == "gray" else 3):
            raise CompileError("bad preprocessing", [Diagnostic(
                f"--{name} has {len(v)} values for {p.color or 'rgb'} images")])
    if any(s == 0 for s in p.std):
        raise CompileError("bad preprocessing", [Diagnostic("--std has a zero")])
    return p


class ImageFolder:
    """A map-style dataset over ``root/<class>/<image>`` (sorted classes and files)."""

    def __init__(self, root: str | Path, preprocess: Preprocess) -> None:
        self.root = Path(root)
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.samples: list[tuple[str, int]] = []
        for i, c in enumerate(self.classes):
            for dirpath, dirnames, files in sorted(os.walk(self.root / c, followlinks=True)):
                dirnames.sort()
                self.samples += [(os.path.join(dirpath, f), i) for f in sorted(files)
                                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not self.samples:
            raise CompileError("empty image folder", [Diagnostic(
                f"{self.root}: no images in class subfolders",
                hint="expected ROOT/<class>/<image>.png|jpg|... (torchvision ImageFolder layout)")])
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[i]
        try:
            return self.preprocess(path), label
        except OSError as e:
            raise CompileError("cannot read image", [Diagnostic(f"{path}: {e}")]) from None


class Checked:
    """A map-style dataset whose every item is checked as it is read: an item that raises
    (or calls ``sys.exit``), whose x is not a finite array of the first item's shape, or whose
    label is not one integer, is one CompileError naming the source and the item index
    (instead of a traceback out of a pass, or a silently wrong batch). Items are ``x`` or
    ``(x, y)`` as the wrapped dataset gives them."""

    def __init__(self, ds: Any, source: str) -> None:
        self.ds, self.source, self.shape = ds, source, None
        if len(ds):
            self.shape = np.shape(self._x(self[0], 0))

    def __len__(self) -> int:
        return len(self.ds)

    def _bad(self, i: int, msg: str) -> CompileError:
        return CompileError("bad sample", [Diagnostic(f"{self.source} item {i}: {msg}")])

    def _x(self, item: Any, i: int) -> np.ndarray:
        raw = item[0] if isinstance(item, (tuple, list)) else item
        try:
            x = np.asarray(raw, np.float32)
        except (TypeError, ValueError) as e:
            raise self._bad(i, f"x is {type(raw).__name__}, not numbers ({e})") from None
        if self.shape is not None and x.shape != self.shape:
            raise self._bad(i, f"x has shape {x.shape}; item 0 has {self.shape}")
        if not np.isfinite(x).all():
            raise self._bad(i, "x contains NaN or Inf")
        return x

    def __getitem__(self, i: int) -> Any:
        try:
            item = self.ds[i]
        except CompileError:
            raise
        except (Exception, SystemExit) as e:  # the user's dataset failed (or called sys.exit)
            raise self._bad(i, f"reading it raised {type(e).__name__}: {e}") from None
        x = self._x(item, i)
        if not isinstance(item, (tuple, list)):
            return x
        y = np.asarray(item[1])
        if y.ndim != 0 or y.dtype.kind not in "iu":
            raise self._bad(i, f"label {item[1]!r} is not one integer")
        return x, int(y)


def _collate(items: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(items[0], (tuple, list)):
        xs = [np.asarray(it[0], np.float32) for it in items]
        ys = np.asarray([int(it[1]) for it in items], np.int64)
    else:
        xs, ys = [np.asarray(it, np.float32) for it in items], None
    return np.stack(xs), ys


class _Picked:
    """A map-style view of chosen rows (``idx``) of a dataset."""

    def __init__(self, ds: Any, idx: np.ndarray) -> None:
        self.ds, self.idx = ds, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> Any:
        return self.ds[int(self.idx[i])]


class _Rows:
    """A map-style view of one block of a dataset (what a rank's DataLoader reads)."""

    def __init__(self, ds: Any, lo: int, hi: int) -> None:
        self.ds, self.lo, self.hi = ds, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, i: int) -> Any:
        return self.ds[self.lo + i]


@dataclass(frozen=True)
class Source:
    """A dataset read in batches: in memory (``arrays``, a ``Dataset``) or streamed from a
    map-style dataset (``dataset``) through a DataLoader with ``workers`` processes.

    ``batches(batch_size)`` yields (global batch index, x (b, ...) float32, y (b,) int64 or None)
    for this rank's block of the global batches; ``take(n)`` keeps the first n samples,
    ``spread(n)`` n samples spread evenly over all of them."""

    source: str
    arrays: Dataset | None = None
    dataset: Any = None
    start: int = 0
    stop: int | None = None
    workers: int = 2
    labelled: bool = True

    @classmethod
    def of(cls, ds: Dataset) -> Source:
        return cls(ds.source, arrays=ds, stop=len(ds), labelled=ds.y is not None)

    def __len__(self) -> int:
        total = len(self.arrays) if self.arrays is not None else len(self.dataset)
        stop = total if self.stop is None else min(self.stop, total)
        return max(0, stop - self.start)

    def take(self, n: int | None, offset: int = 0) -> Source:
        if n is None and not offset:
            return self
        start = self.start + offset
        stop = self.start + len(self) if n is None else min(start + n, self.start + len(self))
        return replace(self, start=start, stop=stop)

    def spread(self, n: int | None) -> Source:
        """n samples evenly spaced over this source: rows ⌊i·N/n⌋, i < n (all of it when
        n ≥ N). An image folder lists its files class by class (ImageNet's layout,
        torchvision's ImageFolder order) and arrays are often saved sorted by label, so their
        first 512 samples are a few classes: a spread subset gives every class its share for
        calibration, tuning and evaluation. In-memory rows are copied (n of them)."""
        if n is None or n >= len(self):
            return self.take(n)
        from snncompile import validate

        n = validate.integer(n, "samples", minimum=1)
        idx = self.start + (np.arange(n, dtype=np.int64) * len(self)) // n
        if self.arrays is not None:
            a = self.arrays
            picked = Dataset(a.x[idx], None if a.y is None else a.y[idx], a.source)
            return replace(self, arrays=picked, start=0, stop=n)
        return replace(self, dataset=_Picked(self.dataset, idx), start=0, stop=n)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.first(1)[0].shape[1:])

    def first(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The first n samples (x, y), read in this process."""
        if self.arrays is not None:
            d = self.arrays.take(min(n, len(self)), self.start)
            return d.x, d.y
        return _collate([self.dataset[self.start + i] for i in range(min(n, len(self)))])

    def batches(self, batch_size: int, *, all_ranks: bool = False
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        from snncompile import distributed

        n = len(self)
        nb = (n + batch_size - 1) // batch_size
        block = range(nb) if all_ranks else distributed.shard(nb)
        if not len(block):
            return
        lo = self.start + block.start * batch_size
        hi = self.start + min(n, block.stop * batch_size)
        if self.arrays is not None:
            for b in block:
                s = self.start + b * batch_size
                e = min(self.start + n, s + batch_size)
                yield b, self.arrays.x[s:e], None if self.arrays.y is None else self.arrays.y[s:e]
            return
        import torch.utils.data as tud

        loader = tud.DataLoader(_Rows(self.dataset, lo, hi), batch_size=batch_size,
                                shuffle=False, num_workers=self.workers,
                                collate_fn=_collate, persistent_workers=False,
                                prefetch_factor=2 if self.workers else None)
        try:
            for b, (x, y) in zip(block, loader):
                yield b, x, y
        except CompileError as e:  # raised in a worker: the DataLoader wraps it in a traceback
            if "\n" not in e.headline:
                raise
            last = [ln for ln in e.headline.splitlines() if ln.strip()][-1]
            raise CompileError(last.split("CompileError: ", 1)[-1]) from None

    def materialize(self) -> Dataset:
        """All samples in memory (for what needs arrays: fine-tuning, one Lava run)."""
        if self.arrays is not None:
            return self.arrays.take(len(self), self.start)
        xs, ys = [], []
        for _, x, y in self.batches(256, all_ranks=True):
            xs.append(x)
            ys.append(y)
        y = None if any(v is None for v in ys) else np.concatenate(ys)
        return Dataset(np.concatenate(xs), y, self.source)


def _import_dataset(spec: str) -> Any:
    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # like --pass: my_data.py in the cwd is found
        sys.path.append(os.getcwd())
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise CompileError("cannot import dataset", [Diagnostic(f"{spec}: {e}")]) from None
    except (Exception, SystemExit) as e:  # the user's module raised (or exited) on import
        raise CompileError("cannot import dataset", [Diagnostic(
            f"{spec}: importing {mod_name} raised {type(e).__name__}: {e}")]) from None
    try:
        ds = obj() if isinstance(obj, type) or (callable(obj) and not hasattr(
            obj, "__getitem__")) else obj
    except CompileError:
        raise
    except (Exception, SystemExit) as e:  # the user's code failed (or called sys.exit)
        raise CompileError("dataset callable failed", [Diagnostic(
            f"{spec}(): {type(e).__name__}: {e}")]) from None
    import torch.utils.data as tud

    if isinstance(ds, tud.IterableDataset) or not (hasattr(ds, "__getitem__")
                                                   and hasattr(ds, "__len__")):
        raise CompileError("not a map-style dataset", [Diagnostic(
            f"{spec} returned {type(ds).__name__}",
            hint="return a torch Dataset with __len__ and __getitem__ giving x or (x, y)")])
    return ds


def channels_first_array(x: np.ndarray, shape: Sequence[int], channels_last: bool) -> np.ndarray:
    """``x`` in the layout of a model input of IR ``shape`` (C, H, W): for a model that reads
    channels-last input (``ir.Input.channels_last``, TensorFlow/Keras), an array saved as
    (N, H, W, C) is transposed (a copy); anything else is returned as it is."""
    if not channels_last or len(shape) != 3:
        return x
    c, h, w = shape
    if x.shape[1:] != (h, w, c) or x.shape[1:] == tuple(shape):
        return x
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def channels_first(src: Source | None, shape: Sequence[int], channels_last: bool) -> Source | None:
    """``src`` with its in-memory arrays in the model's layout (``channels_first_array``);
    image folders (read as C, H, W) stay as they are."""
    if src is None or src.arrays is None:
        return src
    x = channels_first_array(src.arrays.x, shape, channels_last)
    if x is src.arrays.x:
        return src
    arrays = Dataset(x, src.arrays.y, f"{src.arrays.source} (channels-last, transposed)")
    return replace(src, arrays=arrays, source=f"{src.source} (channels-last, transposed)")


def open_data(spec: str | Path, *, need_labels: bool = False, preprocess: Preprocess | None = None,
              workers: int = 2, events: Any = None) -> Source:
    """A ``Source`` from a ``.npz`` file, an image folder, a folder of event recordings
    (binned as ``events``, a ``snncompile.events.EventBinning``) or ``module:callable``."""
    text = str(spec)
    if not text.strip():  # Path("") is the current folder: never read it as an image folder
        raise CompileError("bad data", [Diagnostic("the data path is empty")])
    p = Path(text)
    if p.is_dir() and p.suffix.lower() != ".npz":  # a folder named *.npz is a wrong .npz
        from snncompile import events as event_data

        # an event folder checks its own recordings (and events.summed_source unwraps it)
        ds = (event_data.open_folder(p, events) if event_data.is_event_folder(p)
              else Checked(ImageFolder(p, preprocess or Preprocess()), text))
        src = Source(text, dataset=ds, workers=workers)
    elif p.is_file() or text.endswith(".npz") or ":" not in text:
        return Source.of(load_npz(p, need_labels=need_labels))
    else:
        src = Source(text, dataset=Checked(_import_dataset(text), text), workers=workers)
    if len(src) == 0:
        raise CompileError("empty dataset", [Diagnostic(text)])
    x, y = src.first(1)
    if not np.all(np.isfinite(x)):
        raise CompileError("wrong data", [Diagnostic(f"{text}: sample 0 contains NaN or Inf")])
    src = replace(src, labelled=y is not None)
    if need_labels and y is None:
        raise CompileError("wrong data", [Diagnostic(f"{text}: no labels for evaluation",
                                                     hint="items must be (x, y)")])
    return src
