"""A multi-process gateway (serving.workers >= 2): this process is the admission process and the supervisor
of N HTTP worker processes.

Sockets: one listening socket per worker on the same host and port (SO_REUSEPORT: the kernel spreads new
connections over them by their addresses), plus one per worker on serving.admin_port when it is set. This
process makes them and keeps them, so the port is held from start to stop and a restarted worker takes
over its predecessor's socket with the connections already waiting in it.

Workers: `python -m serving.worker` each, in this process's session (so they share its CPU weight) but
each in a process group of its own (so a terminal's Ctrl-C reaches only this process, which then drains
them in order), each
with a unix socketpair to the admission process (serving/admission.py).

Worker crash: a worker that exits while the gateway is not stopping is logged and started again at once;
its in-flight requests are counted `internal_error` (`worker_lost`). More than MAX_RESTARTS unexpected exits
within RESTART_WINDOW_S is a crash loop: the supervisor stops the gateway and exits 1, so the pod restarts
(its liveness probe, answered by the workers, would otherwise keep passing).

Shutdown (SIGTERM/SIGINT, or `stop()`): the listening sockets are closed here and every worker is sent
SIGTERM, so none accepts anything new; each worker drains as the single-process gateway does (new requests
on open connections get 503 shutting_down, in-flight ones have serving.shutdown_grace_s); at the end of the
grace whatever is still queued or running in the admission process is answered 503 shutting_down, the
workers write those answers and exit, and the engines are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from infopt.engines.base import Engine
from serving.admission import Admission
from serving.server import SHUTDOWN_MARGIN_S
from serving.service import EngineFactory, default_engine_factory
from serving.settings import GatewaySettings
from serving.worker import WorkerConfig

log = logging.getLogger("infopt.gateway")
MAX_RESTARTS = 5  # unexpected worker exits within RESTART_WINDOW_S before the gateway gives up
RESTART_WINDOW_S = 60.0
# Each HTTP worker is one of N processes that already spread the cores: the tokenizers' own thread pool
# (rayon, one thread per core in every worker) would only add threads handing a small batch's texts around,
# CPU the other workers need. The user's environment wins where it sets the variable.
WORKER_ENVIRONMENT = {"TOKENIZERS_PARALLELISM": "false"}
BACKLOG = 2048  # per worker socket: connections the kernel holds until the worker accepts them


def reuseport_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on host:port with SO_REUSEPORT (port 0: the first picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@dataclass
class WorkerProcess:
    index: int
    process: subprocess.Popen[bytes]
    started: float
    pidfd: int = -1
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """The admission process and its N workers; `run()` until `stop()`, returns the exit status."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        workers: int,
        sockets: Sequence[socket.socket] | None = None,
        admin_sockets: Sequence[socket.socket] | None = None,
        engines: list[Engine] | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        log_level: str = "warning",
        access_log: bool = False,
    ) -> None:
        if workers < 2:
            raise ValueError(f"serving.workers is {workers}; the supervisor runs 2 or more (1 is one process)")
        self.settings = settings
        self.count = workers
        admin_port = settings.serving.admin_port
        self.sockets = (
            list(sockets) if sockets is not None else reuseport_sockets(settings.host, settings.port, workers)
        )
        if admin_sockets is None and admin_port is not None:
            admin_sockets = reuseport_sockets(settings.host, admin_port, workers)
        self.admin_sockets = list(admin_sockets or [])
        for group in (self.sockets, self.admin_sockets):
            if group and len(group) != workers:
                raise ValueError(f"{len(group)} listening sockets for {workers} workers; give one per worker")
        self.admission = Admission(settings, engines=engines, engine_factory=engine_factory)
        self.log_level = log_level
        self.access_log = access_log
        self.workers: dict[int, WorkerProcess] = {}
        self.exits: list[tuple[int, int | None]] = []  # (worker index, exit status) of unexpected exits
        self.restarts = 0
        self.max_restarts = MAX_RESTARTS
        self.exit_code = 0
        self.stopping = False
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._crashes: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    # ------------------------------------------------------------------ running
    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.admission.start()
        for index in range(self.count):
            await self._spawn(index)
        log.info(
            "gateway: %d HTTP workers on port %d, admission and engine in process %d",
            self.count,
            self.port,
            os.getpid(),
        )
        await self._stop.wait()
        await self._shutdown()
        return self.exit_code

    def stop(self) -> None:
        """Start the shutdown; safe from a signal handler or another thread."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await self.admission.attach(ours, index)
            listen = [self.sockets[index], *(self.admin_sockets[index : index + 1])]
            config = WorkerConfig(
                settings=self.settings,
                index=index,
                listen_fds=tuple(sock.fileno() for sock in listen),
                link_fd=theirs.fileno(),
                log_level=self.log_level,
                access_log=self.access_log,
            )
            process = subprocess.Popen(
                [sys.executable, "-m", "serving.worker"],
                env={**WORKER_ENVIRONMENT, **os.environ},
                stdin=subprocess.PIPE,
                pass_fds=[*config.listen_fds, config.link_fd],
                process_group=0,
            )
        finally:
            theirs.close()
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(config))
        process.stdin.close()
        worker = WorkerProcess(index, process, time.monotonic())
        worker.pidfd = os.pidfd_open(process.pid)
        assert self._loop is not None
        self._loop.add_reader(worker.pidfd, self._exited, worker)
        self.workers[index] = worker

    def _exited(self, worker: WorkerProcess) -> None:
        assert self._loop is not None
        self._loop.remove_reader(worker.pidfd)
        os.close(worker.pidfd)
        status = worker.process.wait()
        worker.exited.set()
        if self.stopping:
            return
        self.exits.append((worker.index, status))
        now = time.monotonic()
        self._crashes = [at for at in self._crashes if now - at < RESTART_WINDOW_S] + [now]
        if len(self._crashes) > self.max_restarts:
            log.error(
                "worker %d exited with %s: %d unexpected worker exits within %.0f s; stopping the gateway",
                worker.index,
                status,
                len(self._crashes),
                RESTART_WINDOW_S,
            )
            self.exit_code = 1
            self.stop()
            return
        log.error("worker %d (pid %d) exited with %s; starting a new one", worker.index, worker.process.pid, status)
        self.restarts += 1
        task = self._loop.create_task(self._spawn(worker.index))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_workers(self, timeout_s: float) -> bool:
        waits = [asyncio.ensure_future(w.exited.wait()) for w in self.workers.values() if not w.exited.is_set()]
        if not waits:
            return True
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
        for task in pending:
            task.cancel()
        return not pending

    async def _shutdown(self) -> None:
        self.stopping = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in [*self.sockets, *self.admin_sockets]:
            sock.close()  # with the workers' copies closed too, the kernel refuses new connections
        self.admission.begin_drain()
        for worker in self.workers.values():
            if not worker.exited.is_set():
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        grace = self.settings.serving.shutdown_grace_s
        await self._wait_workers(grace)  # every worker drained within the grace: nothing left anywhere
        await self.admission.stop_service()  # else what is still queued or running: 503 shutting_down
        if not await self._wait_workers(SHUTDOWN_MARGIN_S + 2.0):
            for worker in self.workers.values():
                if not worker.exited.is_set():
                    log.error("worker %d did not exit after the drain; killing it", worker.index)
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            await self._wait_workers(5.0)
        links = [asyncio.ensure_future(link.ended.wait()) for link in self.admission.links]
        if links:  # a worker's last frames (its final DONEs) are read before its link's end
            _, late = await asyncio.wait(links, timeout=2.0)
            for task in late:
                task.cancel()
        for link in list(self.admission.links):
            link.close()


def run_supervisor(
    settings: GatewaySettings,
    *,
    workers: int,
    log_level: str,
    access_log: bool = False,
    engine_factory: EngineFactory = default_engine_factory,
) -> int:
    """`infopt serve` with serving.workers >= 2: serve until SIGTERM/SIGINT, then drain; the exit status."""
    import uvloop

    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s %(message)s")
    supervisor = Supervisor(
        settings, workers=workers, log_level=log_level, access_log=access_log, engine_factory=engine_factory
    )

    async def main() -> int:
        supervisor.install_signal_handlers()
        return await supervisor.run()

    return uvloop.run(main())
