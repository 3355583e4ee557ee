"""The vLLM launcher's pinning: the command, the OpenMP binding and the refusal of CPUs the box lacks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.vllm_process import VllmProcess, VllmProcessError, VllmServerSettings, engine_cpus, vllm_command


def test_a_pinned_server_is_started_under_taskset_with_its_openmp_threads_bound_to_the_same_cpus(
    tmp_path: Path,
) -> None:
    cpu = max(os.sched_getaffinity(0))
    settings = VllmServerSettings(model=tmp_path, cpus=(cpu,))
    command = vllm_command(settings, 8000)
    assert command[:3] == ["taskset", "--cpu-list", str(cpu)]
    assert command[3] == str(settings.python) and "--port" in command
    assert VllmProcess(settings)._environment(tmp_path)["VLLM_CPU_OMP_THREADS_BIND"] == str(cpu)


def test_an_unpinned_server_leaves_cpu_placement_to_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    settings = VllmServerSettings(model=tmp_path)
    assert vllm_command(settings, 8000)[0] == str(settings.python)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in VllmProcess(settings)._environment(tmp_path)


def test_cpus_the_process_may_not_use_are_refused_by_number(tmp_path: Path) -> None:
    missing = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(VllmProcessError, match=rf"cpus \[{missing}\] are not among"):
        VllmServerSettings(model=tmp_path, cpus=(missing,))


def test_engine_cpus_spares_all_but_one_cpu_for_the_clients() -> None:
    allowed = os.sched_getaffinity(0)
    pinned = engine_cpus()
    if len(allowed) == 1:
        assert pinned == ()
    else:
        assert len(pinned) == 1 and pinned[0] in allowed
