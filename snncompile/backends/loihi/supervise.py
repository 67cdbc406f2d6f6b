"""A watchdog for Lava runs: a dead worker or a stalled run ends the run, cleanly.

Lava's ``Loihi2SimCfg`` runtime forks one OS process per process model and per runtime
service (``SystemProcess`` actors) plus a ``SharedMemoryManager`` server; they talk over
``/dev/shm`` channels guarded by semaphores. When one of them dies (the kernel's OOM killer, a
``kill``), the main process waits forever for a message that will not come (issue 13: still
waiting after four minutes; the SIGTERM that ended it leaked 40 shared-memory segments).

``Supervisor`` watches from a thread, every ``poll`` seconds: the exit code of every actor and
of the shared-memory server, and the time since the last ``beat()`` (one per completed chunk of
steps). On a death or after ``stall_seconds`` without a beat it records what failed, kills the
other workers (the runtime is lost, and Lava's own ``stop()`` joins every worker without a
timeout) and sends SIGUSR1 to the main thread (again every 2 s until it is out), whose handler
raises; the blocking semaphore wait returns (POSIX
``sem_wait`` fails with EINTR and Python runs the handler), so the run unwinds. ``teardown``
then kills the remaining actors (SIGKILL) and reaps them, shuts the shared-memory server down
(it unlinks its segments) and unlinks any segment the main process still maps from this
runtime; ``__exit__`` turns the interruption into one ``RuntimeFault`` line (CLI: exit 1).

Limits: interrupting needs the run in the main thread (signal handlers run there); elsewhere
the watchdog is off and Lava's own behaviour applies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from snncompile.ir.diagnostics import RuntimeFault

log = logging.getLogger("snncompile.lava")

#: no completed chunk of steps for this long is a stall (the first call, which compiles the
#: process graph and starts the runtime, gets FIRST_CALL_FACTOR times as long)
STALL_SECONDS = 300.0
FIRST_CALL_FACTOR = 4.0
#: stopping the runtime (every worker answers, then exits) may take at most this long
STOP_SECONDS = 60.0


_PR_SET_PDEATHSIG = 1
_supervised = 0  # > 0 while a Supervisor is active in this process


def _die_with_parent() -> None:
    """In a child forked during a supervised run: get SIGKILL when the parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so that a SIGKILLed snn-compile leaves no Lava worker behind
    (they would wait on their semaphores forever)."""
    if _supervised <= 0:
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_die_with_parent)


class _Interrupted(BaseException):
    """Raised in the main thread by the watchdog's signal (never escapes ``Supervisor``)."""


def _signal_name(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _shm_mapped() -> set[str]:
    """Names of the /dev/shm segments this process maps."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in maps.splitlines() if " /dev/shm/" in line}


def _peek_exit(proc: Any) -> int | None:
    """Exit code of a multiprocessing child without reaping it (``waitid`` with ``WNOWAIT``):
    the watchdog thread must not reap a child the main thread may be ``join``ing (a child
    reaped under Lava's ``join`` makes its ``close()`` fail). Negative: killed by a signal."""
    popen = getattr(proc, "_popen", None)
    if popen is None:
        return None
    if popen.returncode is not None:
        return popen.returncode
    try:
        r = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped by the main thread meanwhile
        return popen.returncode
    except OSError:
        return None
    if r is None:
        return None
    return -r.si_status if r.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else r.si_status


def _roles(runtime: Any) -> list[str]:
    """What each actor runs, in the order the runtime started them (its process builders,
    then its runtime services; ``Runtime._build_processes`` / ``_build_runtime_services``)."""
    ex = getattr(runtime, "_executable", None)
    roles: list[str] = []
    for proc, b in (getattr(ex, "proc_builders", None) or {}).items():
        if type(b).__name__ == "PyProcessBuilder":
            model = getattr(getattr(b, "proc_model", None), "__name__", "?")
            roles.append(f"{getattr(proc, 'name', '?')}, {model}")
    for b in (getattr(ex, "runtime_service_builders", None) or {}).values():
        roles.append(getattr(getattr(b, "rs_class", None), "__name__", "runtime service"))
    return roles


class Supervisor:
    """``with Supervisor(process) as sup: ...; sup.beat() ...`` around Lava ``run`` calls."""

    def __init__(self, process: Any, stall_seconds: float | None = None,
                 poll: float = 0.2, *, stopping: bool = False) -> None:
        """``stopping``: supervise ``stop()`` (actors exiting with code 0 are then normal)."""
        self.process = process
        self.stopping = stopping
        self.stall = float(stall_seconds if stall_seconds is not None else STALL_SECONDS)
        self.poll = poll
        self.reason: str | None = None
        self._last = time.monotonic()
        self._beats = 0
        self._stop = threading.Event()
        self._armed = False
        self._thread: threading.Thread | None = None
        self._prev_handler: Any = None
        self._shm_before: set[str] = set()

    # ------------------------------------------------------------------ protocol
    def __enter__(self) -> Supervisor:  # noqa: PYI034
        global _supervised
        _supervised += 1
        self._shm_before = _shm_mapped()
        if threading.current_thread() is threading.main_thread():
            self._prev_handler = signal.signal(signal.SIGUSR1, self._on_signal)
            self._armed = True
            self._thread = threading.Thread(target=self._watch, name="lava-watchdog",
                                            daemon=True)
            self._thread.start()
        return self

    def beat(self) -> None:
        """A chunk of steps completed: progress."""
        self._last = time.monotonic()
        self._beats += 1

    @property
    def failed(self) -> bool:
        return self.reason is not None

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._disarm()
        if self.reason is not None:
            self.teardown()
            raise RuntimeFault(self.reason) from None
        return False

    # ------------------------------------------------------------------ internals
    def _disarm(self) -> None:
        global _supervised
        _supervised -= 1
        self._armed = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._prev_handler is not None:
            signal.signal(signal.SIGUSR1, self._prev_handler)
            self._prev_handler = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None:
            raise _Interrupted()

    def _actors(self) -> list[Any]:
        rt = getattr(self.process, "_runtime", None)
        mi = getattr(rt, "_messaging_infrastructure", None)
        return list(getattr(mi, "actors", None) or [])

    def _smm_process(self) -> Any:
        rt = getattr(self.process, "_runtime", None)
        mi = getattr(rt, "_messaging_infrastructure", None)
        smm = getattr(mi, "_smm", None)
        return getattr(smm, "_process", None)

    def check(self) -> str | None:
        """What has failed, or None."""
        actors = self._actors()
        for i, actor in enumerate(actors):
            code = _peek_exit(actor)
            if code is not None and not (self.stopping and code == 0):
                roles = _roles(getattr(self.process, "_runtime", None))
                role = f" ({roles[i]})" if len(roles) == len(actors) else ""
                return f"Lava worker process {actor.pid}{role} died ({_signal_name(code)})"
        smm = self._smm_process()
        code = _peek_exit(smm) if smm is not None else None
        if code is not None and not (self.stopping and code == 0):
            return f"Lava's shared-memory server (process {smm.pid}) died ({_signal_name(code)})"
        limit = self.stall * (FIRST_CALL_FACTOR if self._beats == 0 and not self.stopping
                              else 1.0)
        idle = time.monotonic() - self._last
        if idle > limit:
            return f"the Lava run made no progress for {idle:.0f} s (limit {limit:.0f} s)"
        return None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            reason = self.check()
            if reason is not None and self._armed:
                self.reason = reason
                log.debug("watchdog: %s", reason)
                # the runtime is lost: kill the other workers now, so that nothing Lava does
                # on the way out (it joins every worker in stop()'s ``finally``) waits forever
                self._kill_actors()
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                # again, until the main thread is out (a wait may have swallowed the first)
                while not self._stop.wait(2.0):
                    if self._armed:
                        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                return

    def _kill_actors(self) -> None:
        for a in self._actors():
            with contextlib.suppress(Exception):
                if _peek_exit(a) is None:
                    os.kill(a.pid, signal.SIGKILL)

    def teardown(self) -> None:
        """Kill and reap every actor, stop the shared-memory server, unlink our segments."""
        import multiprocessing as mp

        actors = self._actors()
        self._kill_actors()
        for a in actors:
            with contextlib.suppress(Exception):
                mp.Process.join(a, 10)
        ours = _shm_mapped() - self._shm_before
        rt = getattr(self.process, "_runtime", None)
        mi = getattr(rt, "_messaging_infrastructure", None)
        smm = getattr(mi, "_smm", None)
        if smm is not None:
            with contextlib.suppress(Exception):
                smm.shutdown()
        for path in ours:
            with contextlib.suppress(OSError):
                os.unlink(path)
        wd = getattr(rt, "_watchdog_manager", None)
        if wd is not None:
            with contextlib.suppress(Exception):
                wd.stop()
        if rt is not None:
            rt._is_running = False
            rt._is_started = False
