"""Components under Pulumi mocks, and the real Pulumi entry point (infra/__main__.py) run under mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pulumi
import pulumi_kubernetes as kubernetes
import pytest
from ruamel.yaml import YAML

from infopt.params import parse_params
from infra.plan import RecordingMocks
from infra.tenant import Tenant, tenant_spec
from tests.infra.planning import FIXTURE_MANIFEST, ROOT, STACKS, run_plan, stack_config


@pytest.fixture
def mocks() -> RecordingMocks:
    recorder = RecordingMocks()
    pulumi.runtime.set_mocks(recorder, project="infopt", stack="dev", preview=False)
    return recorder


@pulumi.runtime.test
def test_tenant_component_declares_quota_and_labels_from_params(mocks, raw_params):
    acme = parse_params(raw_params).tenant("acme")
    tenant = Tenant("inference-acme", tenant_spec(acme), stack_config("dev"), kubernetes.Provider("k8s", context="c"))
    namespace, quota = tenant.resources[0], tenant.resources[1]
    assert [type(r).__name__ for r in tenant.resources] == [
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
    ]

    def check(values: list) -> None:
        metadata, quota_spec = values
        assert metadata["name"] == "inference-acme"
        assert metadata["labels"]["infopt.dev/cost-center"] == acme.cost_center
        assert quota_spec["hard"]["requests.nvidia.com/gpu"] == str(acme.quota.gpu)
        assert quota_spec["hard"]["limits.cpu"] == acme.quota.cpu

    return pulumi.Output.all(namespace.metadata, quota.spec).apply(check)


@pytest.mark.parametrize("stack", STACKS)
def test_program_runs_as_the_pulumi_language_host_runs_it(stack: str, tmp_path, analyzer, raw_params, manifest) -> None:
    """`pulumi up` with `main: infra/`: the language host changes into infra/, puts only infra/ on sys.path,
    passes the stack config in PULUMI_CONFIG and runs the folder's __main__.py. The child gets no PYTHONPATH
    and a relative INFOPT_MANIFEST, so the program must find the project root by itself."""
    raw = YAML(typ="safe").load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "INFOPT_PARAMS")}
    env["PULUMI_CONFIG"] = json.dumps({k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()})
    env["INFOPT_MANIFEST"] = str(FIXTURE_MANIFEST.relative_to(ROOT))  # relative: taken from the project root
    out = tmp_path / "records.json"
    host = [sys.executable, str(ROOT / "tests" / "infra" / "langhost.py"), "--project", "infopt", "--stack", stack]
    done = subprocess.run(
        [*host, "--pwd", str(ROOT / "infra"), "--out", str(out), "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert (done.returncode, report["error"]) == (0, None), done.stderr[-3000:]
    assert report["cwd"] == str(ROOT / "infra")
    records = report["records"]
    providers = [r for r in records if r["type"] == "pulumi:providers:kubernetes"]  # registration order is async
    assert [p["inputs"]["context"] for p in providers] == [raw["infopt:kubeContext"]]
    declared = sorted((r["type"], r["name"]) for r in records if r["type"].startswith("kubernetes:"))
    in_process = run_plan(parse_params(raw_params), manifest, stack, analyzer)
    assert declared == sorted((r.type, r.name) for r in in_process.resources)
    assert len(declared) == 52
