"""CPU used by each process of the gateway (and by the admission process's threads) over a load window.

Through the gateway the host, not the GPU, sets the ceiling (docs/challenge.md): which process runs out of
core first (an HTTP worker, the admission process's event loop, or its engine thread launching the GPU's
work) decides what to change next. The load client runs in other processes, so the gateway's own CPU is
read from /proc (psutil) at the window's start and end, by pid and, for the gateway's main process, by
thread: its main thread is the admission (or the only) event loop, the other threads are the engine's
and the copies'.
"""

from __future__ import annotations

import threading
import time

import psutil

Sample = dict[str, float]  # role -> CPU seconds so far


def sample(pid: int) -> Sample:
    """CPU seconds so far of the gateway process `pid` (split: its main thread, its other threads) and of
    each of its child processes (the HTTP workers, by pid: a restarted worker is a new role)."""
    process = psutil.Process(pid)
    roles: Sample = {"main process: event loop thread": 0.0, "main process: other threads": 0.0}
    for thread in process.threads():
        role = "main process: event loop thread" if thread.id == pid else "main process: other threads"
        roles[role] += thread.user_time + thread.system_time
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        roles[f"child pid {child.pid}"] = times.user + times.system
    return roles


def fractions(before: Sample, after: Sample, seconds: float) -> dict[str, float]:
    """Share of one core each role used between two samples (roles present in both: a worker that was
    restarted in between has no honest number)."""
    if seconds <= 0:
        return {}
    return {role: round(max(0.0, after[role] - before[role]) / seconds, 3) for role in after if role in before}


class WindowCpu:
    """Samples a process tree at a window's start and end, from a thread, while the caller is blocked on the
    load (`arm` is given the window as monotonic times once the load client knows it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.result: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def arm(self, start: float, end: float) -> None:
        self._thread = threading.Thread(target=self._measure, args=(start, end), daemon=True)
        self._thread.start()

    def _measure(self, start: float, end: float) -> None:
        try:
            time.sleep(max(0.0, start - time.monotonic()))
            began, before = time.monotonic(), sample(self.pid)
            time.sleep(max(0.0, end - time.monotonic()))
            self.result = fractions(before, sample(self.pid), time.monotonic() - began)
        except psutil.Error:
            self.result = {}  # the gateway went away during the window: the level's own error says why

    def wait(self, timeout_s: float = 5.0) -> dict[str, float]:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return dict(self.result)
