"""Peak memory and CPU time of a server's whole process tree while a workload runs.

A background thread samples the RSS of each root process and all its descendants (vLLM's API server and
engine core, TorchServe's Java frontend and Python worker) every `interval_s`; CPU time is the tree's
user + system seconds at the end minus at the start (children that exited in between are missed, so the
servers here keep theirs alive). RSS sums count pages shared between the processes once per process: an
upper bound, stated as such in every result that uses it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import psutil


def _tree(pids: Iterable[int]) -> list[psutil.Process]:
    processes: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        processes[root.pid] = root
        for child in root.children(recursive=True):
            processes[child.pid] = child
    return list(processes.values())


def tree_rss(pids: Iterable[int]) -> int:
    total = 0
    for process in _tree(pids):
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    total = 0.0
    for process in _tree(pids):
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += times.user + times.system
    return total


class ProcessMonitor:
    """`with ProcessMonitor([pid]) as monitor: ...` then `monitor.peak_rss_mb`, `.cpu_seconds`, `.wall_s`."""

    def __init__(self, pids: Iterable[int], interval_s: float = 0.1) -> None:
        self.pids = list(pids)
        self.interval_s = interval_s
        self.peak_rss = 0
        self.cpu_seconds = 0.0
        self.wall_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_start = 0.0
        self._began = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, tree_rss(self.pids))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ProcessMonitor:
        self._cpu_start = tree_cpu_seconds(self.pids)
        self._began = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="process-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.peak_rss = max(self.peak_rss, tree_rss(self.pids))
        self.cpu_seconds = tree_cpu_seconds(self.pids) - self._cpu_start
        self.wall_s = time.perf_counter() - self._began

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss / 2**20

    @property
    def cpu_cores_mean(self) -> float:
        return self.cpu_seconds / self.wall_s if self.wall_s > 0 else 0.0
