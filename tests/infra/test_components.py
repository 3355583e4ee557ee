"""Components under Pulumi mocks, and the real Pulumi entry point (infra/__main__.py) run under mocks."""

from __future__ import annotations

import json
import runpy

import pulumi
import pulumi_kubernetes as kubernetes
import pytest
from ruamel.yaml import YAML

from infopt.params import parse_params
from infra.plan import RecordingMocks
from infra.tenant import Tenant, tenant_spec
from tests.infra.planning import FIXTURE_MANIFEST, ROOT, stack_config


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


def test_pulumi_entry_point_runs_under_mocks(monkeypatch) -> None:
    """What `pulumi up` executes: config from the stack file as Pulumi passes it, params and manifest from disk."""
    raw = YAML(typ="safe").load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())["config"]
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="infopt", stack="prod", preview=True)
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()})
    monkeypatch.setenv("INFOPT_MANIFEST", str(FIXTURE_MANIFEST))
    monkeypatch.chdir(ROOT)
    try:
        pulumi.runtime.test(lambda: runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__"))()
    finally:
        pulumi.runtime.set_all_config({})
    types = [record[0] for record in mocks.records]
    assert types[0] == "pulumi:providers:kubernetes"
    assert mocks.records[0][2]["context"] == "infopt-prod"
    assert types.count("kubernetes:apps/v1:Deployment") == 2
    assert len([t for t in types if t.startswith("kubernetes:")]) == 43
