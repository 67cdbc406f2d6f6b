"""Lava fault handling (issue 13): a worker process killed mid-run (as the OOM killer would)
ends the run with exit 1 and one line naming what died; no process of the run survives, no
shared-memory segment of the run is left in /dev/shm, no temporary output folder remains."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from snncompile.data import save_npz

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "digits_cnn.onnx"


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                kids += [int(c) for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return kids


def _shm(pid: int) -> set[str]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in maps.splitlines() if " /dev/shm/" in line}


def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[3]) == sid and stat[0] != "Z":
            found.append(int(d))
    return found


@pytest.mark.lava
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["kill", "kill+sigterm", "sigterm", "kill-main"])
def test_killed_lava_worker_ends_the_run_cleanly(tmp_path, digits_test, mode):
    """"kill+sigterm": the run is also sent SIGTERM right after the kill, before the watchdog's
    next look, so the runtime's stop() meets the dead worker (it used to wait forever).
    "sigterm": a healthy run is terminated (exit 143), with the same cleanliness.
    "kill-main": snn-compile itself is SIGKILLed: its workers die with it (PDEATHSIG) and the
    segments are released; only its temporary folder stays (the next run sweeps it)."""
    started: list[subprocess.Popen] = []
    try:
        _scenario(tmp_path, digits_test, mode, started)
    finally:  # whatever failed, leave no process behind (the resource tracker cleans up shm)
        for proc in started:
            _reap_session(proc)


def _reap_session(proc: subprocess.Popen) -> None:
    for pid in _session(proc.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=30)
    deadline = time.time() + 30
    while _session(proc.pid) and time.time() < deadline:
        time.sleep(0.2)


def _scenario(tmp_path, digits_test, mode: str, started: list) -> None:
    sigterm = "sigterm" in mode
    ev = tmp_path / "e.npz"
    x, y = np.repeat(digits_test.x, 2, 0)[:600], np.repeat(digits_test.y, 2, 0)[:600]
    save_npz(ev, x, y)
    exe = Path(sys.executable).with_name("snn-compile")
    proc = subprocess.Popen([str(exe), str(MODEL), "--target", "loihi", "--eval", str(ev),
                             "--calibration", str(ev), "--calibration-samples", "64",
                             "--eval-samples", "600", "--timesteps", "32",
                             "--out", str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    started.append(proc)
    segments: set[str] = set()
    victim = None
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None:
        workers = [k for k in _children(proc.pid) if len(_shm(k)) > 1]
        for k in workers:
            segments |= _shm(k)
        if len(workers) >= 4:
            time.sleep(1.0)  # mid-run
            for k in _children(proc.pid):
                segments |= _shm(k)
            segments |= _shm(proc.pid)
            victim = max(workers)
            if mode == "kill-main":
                victim = proc.pid
            if "kill" in mode:
                os.kill(victim, signal.SIGKILL)
            if sigterm:
                proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.1)
    assert victim is not None, "no Lava workers seen"
    _, err = proc.communicate(timeout=120)
    print(proc.returncode, err)
    lines = err.strip().splitlines()
    if mode == "kill-main":
        assert proc.returncode == -signal.SIGKILL
        deadline = time.time() + 30
        while time.time() < deadline and (_session(proc.pid) or any(map(os.path.exists,
                                                                        segments))):
            time.sleep(0.2)
        assert _session(proc.pid) == [], "orphaned processes"
        assert segments and not [s for s in segments if os.path.exists(s)], "leaked shm"
        from snncompile.tools.output import sweep_stale

        assert len(sweep_stale(tmp_path / "o")) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz"]
        return
    assert len(lines) == 1, err
    if mode == "sigterm" or (sigterm and proc.returncode == 143):  # (SIGTERM won the race)
        assert lines[0] == "snn-compile: terminated" and proc.returncode == 143, err
    else:
        assert proc.returncode == 1, err
        assert f"Lava worker process {victim}" in lines[0] and "died" in lines[0], lines[0]
        assert "SIGKILL" in lines[0]
    time.sleep(0.5)
    assert _session(proc.pid) == [], "orphaned processes"
    assert segments and not [s for s in segments if os.path.exists(s)], "leaked shared memory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz"]


@pytest.mark.lava
@pytest.mark.timeout(300)
def test_stalled_lava_worker_is_a_fault_not_a_hang(digits_train, digits_test):
    """A worker that stops (SIGSTOP: alive, no progress) trips the stall bound; the run raises
    RuntimeFault naming the stall, and the stopped worker is killed and reaped."""
    import threading

    import snncompile
    from snncompile.ir.diagnostics import RuntimeFault

    net = snncompile.compile(MODEL, target="loihi", calibration=digits_train.take(64),
                             timesteps=8)
    stopped: list[int] = []
    seen: set[str] = set()

    def stop_one() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            workers = [k for k in _children(os.getpid()) if len(_shm(k)) > 1]
            if len(workers) >= 4:
                time.sleep(0.5)
                stopped.append(max(workers))
                seen.update(_shm(os.getpid()))
                os.kill(stopped[0], signal.SIGSTOP)
                return
            time.sleep(0.05)

    t = threading.Thread(target=stop_one, daemon=True)
    t.start()
    t0 = time.time()
    with pytest.raises(RuntimeFault, match="no progress"):
        net.run(np.repeat(digits_test.x, 3, 0), 8, progress=False, stall_seconds=2.0)
    t.join()
    assert stopped and time.time() - t0 < 60
    assert not any(k == stopped[0] for k in _children(os.getpid()))
    assert seen and not [p for p in seen if os.path.exists(p)], "leaked shared memory"
