"""The output-folder policy of ``snn-compile``: never lose a user's file, never leave a mix.

Policy (README, "Output folder"):

* A run writes into a fresh temporary folder ``.<OUT>.tmp-<pid>-<random>`` next to ``--out``
  and marks it with the file ``.snn-compile`` (the *marker*). Only a successful run moves it
  into place, in one step: Linux ``renameat2(RENAME_EXCHANGE)`` swaps the new folder with an
  earlier output atomically (elsewhere: rename the old one aside, rename the new one in, roll
  back on failure); the earlier output is then deleted as a whole. A reader sees the old
  output or the new one, never a mix.
* ``--out`` may be: absent; an empty folder; or an earlier snn-compile output (a folder holding
  the marker), which is replaced as a whole (its report, plots and IR dumps go with it). Any
  other existing path (a non-empty folder without the marker, a file, a symlink, ``""``, the
  current folder or one above it unless it is an earlier output) is refused before any work
  starts (exit 2, nothing written). Nothing the tool did not create is deleted or overwritten.
* ``--out``'s parent must be writable; folders created for it are removed again on failure.
* ``--report F`` is checked before the work and written only on success, atomically
  (temporary file + ``os.replace``). F may be a new file or an earlier report.json of ours
  (``is_earlier_report``); the model, a data file or folder, anything inside ``--out``, a
  symbolic link and any other existing file are refused (exit 2, nothing written).
* Two runs into one ``--out``: the commit step holds an ``flock`` on the parent folder, so the
  result is one run's output or the other's, never a mix.
* SIGTERM ends the run like Ctrl-C (``sigterm_unwinds``): temporary folders are removed.
  Temporary folders of runs killed harder (SIGKILL, power loss) are swept at the next start:
  a ``.<OUT>.tmp-<pid>-*`` or ``.<OUT>.old-<pid>-*`` folder holding the marker whose process
  is gone (or whose pid now belongs to a process started after the folder) is deleted.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from snncompile.ir.diagnostics import CompileError, Diagnostic

MARKER = ".snn-compile"
_RENAME_EXCHANGE = 2


class Terminated(BaseException):
    """SIGTERM arrived: unwind (temporary output is removed on the way), exit 143."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While inside: SIGTERM raises ``Terminated`` in the main thread, so that ``finally``
    blocks and ``OutputDir.discard`` run. The previous handler is restored on exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    try:
        prev = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread: leave the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, prev)


def _bad(what: str, hint: str | None = None) -> CompileError:
    return CompileError("bad --out", [Diagnostic(what, hint=hint)])


def is_earlier_output(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink() and (p / MARKER).is_file()


def check_out(out: Path | str) -> Path:
    """Check ``--out`` before any work; returns it as a Path. Every problem is a CompileError."""
    if str(out).strip() == "":
        raise _bad("--out is empty", hint="an unset variable? give a folder name")
    p = Path(out)
    if p.is_symlink():
        raise _bad(f"{p} is a symbolic link", hint="give a real folder")
    if p.exists():
        if not p.is_dir():
            raise _bad(f"{p} is a file, not a folder")
        if not is_earlier_output(p):
            if any(p.iterdir()):
                raise _bad(f"{p} is a folder that holds files and no earlier snn-compile output",
                           hint="snn-compile replaces only its own output; choose a new folder")
            if Path.cwd().resolve().is_relative_to(p.resolve()):
                raise _bad(f"{p} is the current folder (or holds it)", hint="choose a subfolder")
        elif not os.access(p, os.W_OK | os.X_OK):
            raise _bad(f"{p} is not writable")
    # the nearest existing ancestor must be a writable folder
    anc = p.absolute().parent
    while not anc.exists() and not anc.is_symlink():
        anc = anc.parent
    if not anc.is_dir():
        raise _bad(f"{anc} is not a folder (it is on the path of {p})")
    if not _writable(anc):
        raise _bad(f"cannot write in {anc}", hint="read-only folder?")
    return p


def _writable(folder: Path) -> bool:
    """Really try (``os.access`` says yes to root on a read-only mount)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        probe = tempfile.mkdtemp(prefix=".snn-compile-probe-", dir=folder)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def is_earlier_report(p: Path) -> bool:
    """``p`` is a report.json that snn-compile wrote (a JSON object with the fields
    ``build_report`` always writes: ``target``, ``accuracy_by_timestep`` and ``versions`` naming
    snncompile). Read only up to ``_REPORT_MAX`` bytes: anything larger is not ours."""
    try:
        if not p.is_file() or p.is_symlink() or p.stat().st_size > _REPORT_MAX:
            return False
        doc = json.loads(p.read_bytes())
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and isinstance(doc.get("versions"), dict)
            and "snncompile" in doc["versions"] and "target" in doc
            and isinstance(doc.get("accuracy_by_timestep"), dict))


_REPORT_MAX = 64 * 2**20


def _same_or_inside(p: Path, other: Path, *, folder: bool = False) -> bool:
    """``p`` is ``other`` (any spelling: relative, absolute, through symbolic links, a hard
    link: ``os.path.samefile``) or lies inside the folder ``other`` (``folder``: ``other`` is
    a folder to be, that may not exist yet)."""
    try:
        if p.exists() and other.exists() and os.path.samefile(p, other):
            return True
    except OSError:
        pass
    return ((folder or other.is_dir())
            and p.absolute().resolve().is_relative_to(other.absolute().resolve()))


def _report_bad(msg: str, hint: str | None = None) -> CompileError:
    return CompileError("bad --report", [Diagnostic(msg, hint=hint)])


def check_report(report: Path | str | None, *, out: Path | str | None = None,
                 inputs: Sequence[Path | str | None] = ()) -> Path | None:
    """Check ``--report`` before any work. It may be a new file or an earlier report.json of
    ours (``is_earlier_report``), never one of the run's ``inputs`` (the model, data files or
    folders), nothing inside ``out`` (the output folder, replaced as a whole), never a
    symbolic link, and never any other existing file."""
    if report is None:
        return None
    if str(report).strip() == "":
        raise _report_bad("--report is empty")
    p = Path(report)
    if p.is_symlink():
        raise _report_bad(f"{p} is a symbolic link", hint="give a real file name")
    if p.is_dir():
        raise _report_bad(f"{p} is a folder; give a file name")
    for what in inputs:
        if what is not None and str(what).strip() and _same_or_inside(p, Path(what)):
            raise _report_bad(f"{p} is (or is inside) the input {what}",
                              hint="the report never replaces an input; give a new file name")
    if out is not None and str(out).strip() and _same_or_inside(p, Path(out), folder=True):
        raise _report_bad(f"{p} is inside --out {out}",
                          hint="the output folder holds its own report.json already")
    if p.exists() and not is_earlier_report(p):
        raise _report_bad(f"{p} exists and is not an earlier snn-compile report",
                          hint="--report replaces only its own report.json; give a new name")
    anc = p.absolute().parent
    while not anc.exists() and not anc.is_symlink():
        anc = anc.parent
    if not anc.is_dir():
        raise _report_bad(f"{anc} is not a folder (on the path of {p})")
    if not _writable(anc) or (p.exists() and not os.access(p, os.W_OK)):
        raise _report_bad(f"cannot write {p}")
    return p


def write_report(path: Path, text: str) -> None:
    """Write ``--report`` at the end of a run, atomically, after checking again that ``path``
    is still new or an earlier report (it may have been replaced while we ran)."""
    if path.is_symlink() or (path.exists() and not is_earlier_report(path)):
        raise _report_bad(f"{path} was replaced by another file while snn-compile ran; "
                          "nothing written to it")
    write_atomic(path, text)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _process_start(pid: int) -> float | None:
    """Start time (epoch seconds) of process ``pid``, or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0
        return 0.0


def sweep_stale(final: Path) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>-*`` folders beside ``final`` that hold
    the marker and whose process is gone or younger than the folder. Returns what was deleted."""
    parent = final.absolute().parent
    gone: list[Path] = []
    if not parent.is_dir():
        return gone
    for kind in ("tmp", "old"):
        for d in parent.glob(f".{final.name}.{kind}-*"):
            try:
                pid = int(d.name[len(f".{final.name}.{kind}-"):].split("-", 1)[0])
            except ValueError:
                continue
            if pid == os.getpid() or d.is_symlink():
                continue
            try:  # its owner may commit or remove it at any moment
                born = (d / MARKER).stat().st_mtime
            except OSError:
                continue
            start = _process_start(pid)
            if start is None or start > born + 1.0:
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d)
    return gone


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


class OutputDir:
    """A run's output folder: written into ``tmp``; ``commit`` puts it at ``final`` in one step
    (``OutputDir``, not ``Output``: ``ir.nodes.Output`` is the graph's output node)."""

    def __init__(self, final: Path) -> None:
        self.final = check_out(final)
        parent = self.final.absolute().parent
        self._made: list[Path] = []  # ancestors this run created (removed again on failure)
        anc = parent
        while not anc.exists():
            self._made.append(anc)
            anc = anc.parent
        parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.final)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-{os.getpid()}-",
                                         dir=parent))
        (self.tmp / MARKER).write_text(json.dumps({"tool": "snn-compile", "pid": os.getpid(),
                                                   "started": time.time()}) + "\n")

    def commit(self) -> None:
        """Put the output in place in one step (see the module docstring); an OS refusal
        (a mount point, a full disk, permissions changed meanwhile) is one CompileError and
        leaves ``--out`` as it was."""
        try:
            self._commit()
        except OSError as e:
            raise CompileError("cannot write --out", [Diagnostic(
                f"{self.final}: {e.strerror or e}")]) from None

    def _commit(self) -> None:
        final = self.final.absolute()
        with _locked(final.parent):
            if final.exists() or final.is_symlink():
                check_out(self.final)  # it may have changed while we ran
                if not _exchange(self.tmp, final):
                    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-",
                                                dir=final.parent))
                    os.rename(final, old / "x")  # aside, inside a marked folder
                    (old / MARKER).write_text("{}\n")
                    try:
                        os.rename(self.tmp, final)
                    except BaseException:
                        os.rename(old / "x", final)
                        shutil.rmtree(old, ignore_errors=True)
                        raise
                    self.tmp = old
                # self.tmp now holds the earlier output
            else:
                os.rename(self.tmp, final)
                self.tmp = None  # type: ignore[assignment]
            self._made = []
        self.discard()

    def discard(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for d in self._made:  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        self._made = []


#: the former name (deprecated): ``OutputDir``
Output = OutputDir
