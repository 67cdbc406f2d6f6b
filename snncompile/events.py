"""Event-camera recordings as calibration and evaluation data: reading and binning into frames.

A recording is a list of events (x, y, t, p): pixel column x and row y, timestamp t (µs) and
polarity p (ON > 0, OFF ≤ 0). Files (one subfolder per class, as image folders are laid out):

- ``.npy``: a structured array with fields x, y, t, p (tonic's layout; any integer or bool
  field types);
- ``.bin``: the 40-bit events of N-MNIST and N-Caltech101 (Orchard et al., Frontiers in
  Neuroscience 2015): byte 0 x, byte 1 y, bit 7 of byte 2 the polarity, the other 23 bits of
  bytes 2..4 the timestamp in µs (big-endian); an event with y = 240 marks a timestamp overflow
  (later timestamps + 2^13 µs) and is not a pixel event;
- ``.aedat4``: iniVation's AEDAT 4.0 container (``aedat4``).

Binning into T frames (``bin_events``), ``by`` "time" (bins of equal duration between the first
and the last event) or "count" (bins of equal event count, in time order; event i goes to bin
⌊i·T/n⌋). Frame channels are polarities (channel 0 OFF, 1 ON; a one-channel model gets their sum).
Frame t, sent at step t, holds T · (events of bin t) per pixel and channel, so that the mean of
the T frames is the recording's event count per pixel and channel: that summed frame (C, H, W) is
what the ANN reads (its training input, the calibration data of threshold balancing and tuning,
and its reference accuracy), and the SNN's input current averages to it over the T steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic

EVENT_EXTENSIONS = (".npy", ".bin", ".aedat4")
BINNINGS = ("time", "count")
FIELDS = ("x", "y", "t", "p")
#: N-MNIST .bin: y of a timestamp-overflow event, and what it adds to the later timestamps
NMNIST_OVERFLOW_Y = 240
NMNIST_OVERFLOW_US = 2 ** 13


def _wrong(path: Any, what: str, hint: str | None = None) -> CompileError:
    return CompileError("wrong event file", [Diagnostic(f"{path}: {what}", hint=hint)])


def _events(x: Any, y: Any, t: Any, p: Any) -> np.ndarray:
    out = np.empty(len(x), dtype=[("x", np.int64), ("y", np.int64), ("t", np.int64),
                                  ("p", np.int8)])
    out["x"], out["y"], out["t"] = x, y, t
    out["p"] = np.asarray(p).astype(np.int64) > 0
    return out


# ------------------------------------------------------------------------------ readers
def read_npy(path: str | Path) -> np.ndarray:
    """tonic's layout: a structured array with fields x, y, t, p."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise _wrong(path, f"not a readable .npy file ({e})") from None
    names = a.dtype.names or ()
    missing = [f for f in FIELDS if f not in names]
    if a.ndim != 1 or missing:
        raise _wrong(path, f"not an event array: dtype {a.dtype}, shape {a.shape}",
                     hint="expected a 1-D structured array with fields x, y, t, p (tonic)")
    if any(a.dtype[f].kind not in "iub" for f in FIELDS):
        raise _wrong(path, f"event fields must be integers or bool, not {a.dtype}")
    return _events(a["x"], a["y"], a["t"], a["p"])


def read_bin(path: str | Path) -> np.ndarray:
    """N-MNIST's 40-bit events (module docstring)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise _wrong(path, f"{raw.size} bytes is not a whole number of 5-byte (40-bit) events",
                     hint="expected N-MNIST .bin (Orchard et al. 2015)")
    r = raw.reshape(-1, 5).astype(np.int64)
    t = ((r[:, 2] & 0x7F) << 16) | (r[:, 3] << 8) | r[:, 4]
    overflow = r[:, 1] == NMNIST_OVERFLOW_Y
    t = t + NMNIST_OVERFLOW_US * np.cumsum(overflow)
    keep = ~overflow
    return _events(r[keep, 0], r[keep, 1], t[keep], r[keep, 2] >> 7)


def read_events(path: str | Path) -> np.ndarray:
    """The events of one recording (x, y, t, p), by file extension."""
    ext = Path(path).suffix.lower()
    if ext == ".npy":
        return read_npy(path)
    if ext == ".bin":
        return read_bin(path)
    if ext == ".aedat4":
        from snncompile.aedat4 import read_aedat4

        return read_aedat4(path)
    raise _wrong(path, f"unknown event file type {ext!r}",
                 hint=f"event files: {', '.join(EVENT_EXTENSIONS)}")


def check_header(path: str | Path) -> None:
    """A cheap check of a file's framing (what ``read_events`` would refuse at once)."""
    ext = Path(path).suffix.lower()
    if ext == ".npy":
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise _wrong(path, f"not a readable .npy file ({e})") from None
        if a.ndim != 1 or any(f not in (a.dtype.names or ()) for f in FIELDS):
            raise _wrong(path, f"not an event array: dtype {a.dtype}, shape {a.shape}",
                         hint="expected a 1-D structured array with fields x, y, t, p (tonic)")
    elif ext == ".bin":
        size = os.path.getsize(path)
        if size % 5:
            raise _wrong(path, f"{size} bytes is not a whole number of 5-byte (40-bit) events",
                         hint="expected N-MNIST .bin (Orchard et al. 2015)")
    elif ext == ".aedat4":
        from snncompile.aedat4 import check_aedat4

        check_aedat4(path)


# ------------------------------------------------------------------------------ binning
def bin_events(ev: np.ndarray, shape: tuple[int, ...], frames: int | None, by: str = "time",
               source: Any = "events") -> np.ndarray:
    """Frames (T, C, H, W) of one recording (module docstring), or with ``frames=None`` the
    summed frame (C, H, W): the event counts per pixel and channel."""
    c, h, w = (int(s) for s in shape)
    x, y = ev["x"], ev["y"]
    out_of = (x < 0) | (y < 0) | (x >= w) | (y >= h)
    if out_of.any():
        i = int(np.argmax(out_of))
        raise _wrong(source, f"event {i} at (x={int(x[i])}, y={int(y[i])}) lies outside the "
                             f"model's {w}×{h} input",
                     hint="events with 0 <= x < W and 0 <= y < H (the model's input size)")
    ch = (ev["p"] > 0).astype(np.int64) if c == 2 else np.zeros(len(ev), np.int64)
    if c not in (1, 2):
        raise CompileError("event data does not fit the model", [Diagnostic(
            f"{source}: the model reads {c} channels; event frames have 2 (OFF, ON) or 1",
            hint="a model with a (2, H, W) or (1, H, W) input")])
    n = 1 if frames is None else int(frames)
    b = _bins(ev, n, by) if frames is not None else np.zeros(len(ev), np.int64)
    flat = ((b * c + ch) * h + y) * w + x
    out = np.bincount(flat, minlength=n * c * h * w).astype(np.float32)
    if frames is None:
        return out.reshape(c, h, w)
    return out.reshape(n, c, h, w) * np.float32(n)


def _bins(ev: np.ndarray, n: int, by: str) -> np.ndarray:
    """The bin of every event: equal durations (time) or equal counts in time order (count)."""
    if by not in BINNINGS:
        raise CompileError("bad option", [Diagnostic(
            f"event_binning={by!r}; choose from {', '.join(BINNINGS)}")])
    if not len(ev):
        return np.zeros(0, np.int64)
    t = ev["t"].astype(np.int64)
    if by == "count":
        order = np.argsort(t, kind="stable")
        b = np.empty(len(t), np.int64)
        b[order] = (np.arange(len(t), dtype=np.int64) * n) // len(t)
        return b
    t0, span = int(t.min()), int(t.max() - t.min())
    if span == 0:
        return np.zeros(len(t), np.int64)
    return np.minimum(((t - t0) * n) // span, n - 1)


# ------------------------------------------------------------------------------ folders
@dataclass(frozen=True)
class EventBinning:
    """How a folder of recordings becomes samples: the model's input ``shape`` (C, H, W),
    ``frames`` T per sample (None: the summed frame, the ANN's view) and ``by``."""

    shape: tuple[int, ...]
    frames: int | None = None
    by: str = "time"


def event_files(root: Path) -> list[tuple[str, int]]:
    """(path, label) of every event file under ``root/<class>/`` (sorted classes and files)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    out: list[tuple[str, int]] = []
    for i, c in enumerate(classes):
        for dirpath, dirnames, files in sorted(os.walk(root / c, followlinks=True)):
            dirnames.sort()
            out += [(os.path.join(dirpath, f), i) for f in sorted(files)
                    if f.lower().endswith(EVENT_EXTENSIONS)]
    return out


def is_event_folder(root: str | Path) -> bool:
    """A class-per-folder directory whose first class holds event files."""
    p = Path(root)
    if not p.is_dir():
        return False
    for d in sorted(x for x in p.iterdir() if x.is_dir()):
        for _, _, files in os.walk(d, followlinks=True):
            if any(f.lower().endswith(EVENT_EXTENSIONS) for f in files):
                return True
        return False
    return False


class EventFolder:
    """A map-style dataset over ``root/<class>/<recording>``: item i is (frames (T, C, H, W) or
    the summed frame (C, H, W), label). Every file's framing is checked when the folder is
    opened (``check_header``), so a wrong file is refused before anything runs."""

    def __init__(self, root: str | Path, binning: EventBinning) -> None:
        self.root = Path(root)
        self.binning = binning
        if len(binning.shape) != 3:
            raise CompileError("event data does not fit the model", [Diagnostic(
                f"{root}: event frames are (C, H, W); the model's input is "
                f"{tuple(binning.shape)}")])
        self.samples = event_files(self.root)
        if not self.samples:
            raise CompileError("empty event folder", [Diagnostic(
                f"{self.root}: no event files in class subfolders",
                hint=f"expected ROOT/<class>/<recording> ({', '.join(EVENT_EXTENSIONS)})")])
        for path, _ in self.samples:
            check_header(path)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[i]
        b = self.binning
        return bin_events(read_events(path), b.shape, b.frames, b.by, source=path), label


def open_folder(root: str | Path, binning: EventBinning | None) -> EventFolder:
    """``EventFolder(root, binning)``; without a binning (the model's input shape is not
    known where the folder was named) a one-line error."""
    if binning is None:
        raise CompileError("event recordings need the model's input shape", [Diagnostic(
            f"{root} holds event recordings",
            hint="pass data.open_data(..., events=snncompile.events.EventBinning((C, H, W))) "
                 "or use the snn-compile command")])
    return EventFolder(root, binning)


def binning_for(opts: Any, shape: Any, *, frames: bool) -> EventBinning:
    """The binning of event folders for ``opts`` (T = timesteps, ``event_binning``) and a
    model input ``shape``; ``frames=False``: the summed frame (calibration, the ANN)."""
    return EventBinning(tuple(int(s) for s in shape), opts.timesteps if frames else None,
                        opts.event_binning)


def summed_source(src: Any) -> Any:
    """``src`` reading summed frames instead of T frames, where it is a ``data.Source`` over
    an ``EventFolder`` (or a spread subset of one); any other source as it is."""
    from dataclasses import replace

    ds = getattr(src, "dataset", None)
    picked = getattr(ds, "idx", None)
    folder = ds.ds if picked is not None else ds
    if not isinstance(folder, EventFolder):
        return src
    flat = EventFolder.__new__(EventFolder)
    flat.__dict__.update(folder.__dict__)
    flat.binning = replace(folder.binning, frames=None)
    if picked is not None:
        from snncompile.data import _Picked

        return replace(src, dataset=_Picked(flat, picked))
    return replace(src, dataset=flat)


def summed(x: np.ndarray) -> np.ndarray:
    """The ANN's input for frames (N, T, *in): their mean over T (the event counts)."""
    return x.mean(axis=1, dtype=np.float64).astype(np.float32)


# ------------------------------------------------------------------------------ writers
def write_npy(path: str | Path, x: Any, y: Any, t: Any, p: Any) -> None:
    """Events as tonic's structured .npy (x, y int16, t int64 µs, p bool... as int8)."""
    a = np.empty(len(x), dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64),
                                ("p", np.int8)])
    a["x"], a["y"], a["t"], a["p"] = x, y, t, p
    np.save(path, a)


def write_bin(path: str | Path, x: Any, y: Any, t: Any, p: Any) -> None:
    """Events as N-MNIST's 40-bit .bin (x, y < 256, y ≠ 240, t < 2^23 µs; no overflow events)."""
    x, y, t, p = (np.asarray(v, np.int64) for v in (x, y, t, p))
    if len(x) and (x.max() > 255 or y.max() > 255 or (y == NMNIST_OVERFLOW_Y).any()
                   or t.min() < 0 or t.max() >= 2 ** 23):
        raise ValueError("N-MNIST .bin holds x, y < 256 (y != 240) and t < 2^23 µs")
    r = np.empty((len(x), 5), np.uint8)
    r[:, 0], r[:, 1] = x, y
    r[:, 2] = ((p > 0).astype(np.int64) << 7) | (t >> 16)
    r[:, 3], r[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    r.tofile(path)
