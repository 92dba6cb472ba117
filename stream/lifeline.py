"""Child processes that never outlive the process that started them.

`leadlag demo` starts the embedded broker, a worker and the simulator, each
in a session of its own (so a terminal's Ctrl-C reaches the demo alone, and
the demo stops them in order). Two mechanisms make sure none survives it:

- the demo stops them itself, whatever made it stop (`stop_process_groups`:
  SIGTERM to every group at once, one shared grace period, then SIGKILL);
- should the demo die without doing so (SIGKILL, an out-of-memory kill), the
  kernel signals each child: `die_with_parent()` is a `preexec_fn` that sets
  Linux's parent-death signal (`prctl(PR_SET_PDEATHSIG)`), which survives
  `exec` and fires when the thread that started the child ends. So it is set
  only for children started from the main thread; elsewhere (and on other
  systems) it is None and only the first mechanism applies.

See README.md, "Commands" (`leadlag demo`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""
POLL_SECONDS = 0.1


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


_PRCTL = _libc_prctl()


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` making the child receive `sig` when this process dies; None where that cannot work.

    None on systems without `prctl` and off the main thread (the kernel sends the signal when the
    *thread* that forked the child ends, which for a helper thread is long before the process does).
    """
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _PRCTL
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec: no locks, no allocation-heavy work
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm


def alive(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None


def stop_process_groups(
    processes: Iterable[subprocess.Popen[bytes]],
    grace_seconds: float,
    *,
    kill_now: Callable[[], bool] = lambda: False,
    on_kill: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> None:
    """SIGTERM the process group of each child (each started with `start_new_session=True`) at once, wait
    for all within one grace period, then SIGKILL the groups still there; returns once every child exited.

    `kill_now()` is polled while waiting: when it turns true (a second Ctrl-C), the rest are killed at once.
    `on_kill` is told about each child killed (for a message). Never raises for a child already gone.
    """
    running = [process for process in processes if alive(process)]
    for process in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while any(alive(process) for process in running) and time.monotonic() < deadline and not kill_now():
        time.sleep(POLL_SECONDS)
    for process in running:
        if alive(process):
            if on_kill is not None:
                with contextlib.suppress(Exception):
                    on_kill(process)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
    for process in running:
        process.wait()
