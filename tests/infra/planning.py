"""Shared helpers of the infra tests: the repository params, the fixture manifest, plans of edited inputs."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from infopt.manifest import Manifest, load_manifest
from infopt.params import Params, parse_params
from infra.plan import PlanResult, plan
from infra.policy_analyzer import PolicyAnalyzer
from infra.stack_config import StackConfig, load_stack_config, stack_file

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MANIFEST = ROOT / "tests" / "fixtures" / "manifest.json"
CUDA_MANIFEST = ROOT / "tests" / "fixtures" / "manifest-cuda.json"  # the same run measured on a GPU host
STACKS = ("dev", "staging", "prod")


@pytest.fixture(scope="session")
def raw_params() -> dict[str, Any]:
    return YAML(typ="safe").load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return load_manifest(FIXTURE_MANIFEST)


@pytest.fixture(scope="session")
def cuda_manifest() -> Manifest:
    """GPU deployments are planned from sweeps measured on a GPU."""
    return load_manifest(CUDA_MANIFEST)


@pytest.fixture(scope="session")
def analyzer() -> Iterator[PolicyAnalyzer]:
    """One policy pack server (its own process, spoken to over gRPC) for the whole session."""
    with PolicyAnalyzer() as running:
        yield running


def stack_config(stack: str) -> StackConfig:
    return load_stack_config(stack_file(stack, ROOT / "stacks"))


def params_with(raw: dict[str, Any], edit) -> Params:
    """params.yaml with one edit applied (edit mutates a deep copy of the raw mapping)."""
    changed = copy.deepcopy(raw)
    edit(changed)
    return parse_params(changed, "params.yaml (edited in test)")


def run_plan(
    params: Params, manifest: Manifest, stack: str, analyzer: PolicyAnalyzer, config: StackConfig | None = None
) -> PlanResult:
    return plan(params, manifest, config or stack_config(stack), stack, analyzer)
