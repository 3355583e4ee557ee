"""Bad inputs fail with a clear error before any resource is declared; the stack config is typed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes
import pytest

from infopt.manifest import Manifest
from infopt.params import ParamsError, parse_params
from infra.plan import RecordingMocks, set_recording_mocks
from infra.program import build
from infra.stack_config import ReplicaBounds, StackConfigError, load_stack_config
from infra.topology import TopologyError, resolve
from tests.infra.planning import ROOT, params_with, stack_config


def declared_before_failing(params, manifest: Manifest, config) -> tuple[list, BaseException]:
    """Run build() under recording mocks; returns what was declared and the error it raised."""
    mocks = set_recording_mocks("infopt", "prod")
    with pytest.raises(TopologyError) as caught:
        pulumi.runtime.test(lambda: build(params, manifest, config, kubernetes.Provider("k8s", context="c")))()
    return [record for record in mocks.records if record[0].startswith("kubernetes:")], caught.value


def test_unknown_tenant_in_a_deployment_fails_at_params(raw_params) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["deployments"][1]["tenants"] = ["globex", "umbrella"]

    with pytest.raises(
        ParamsError, match=r"deployments\[textcls-shared\]\.tenants: unknown tenant\(s\) \['umbrella'\]"
    ):
        params_with(raw_params, edit)


def test_unknown_tenant_or_deployment_in_stack_config(raw_params, manifest) -> None:
    config = stack_config("prod").model_copy(update={"tenants": ["acme", "umbrella"]})
    declared, error = declared_before_failing(parse_params(raw_params), manifest, config)
    assert declared == []
    assert "infopt:tenants: unknown tenants ['umbrella']; params.yaml has ['acme', 'globex', 'initech']" in str(error)
    config = stack_config("prod").model_copy(update={"deployments": ["textcls-premium", "nope"]})
    declared, error = declared_before_failing(parse_params(raw_params), manifest, config)
    assert declared == []
    assert "unknown deployments ['nope']" in str(error)


def test_quota_smaller_than_the_deployment_needs(raw_params, manifest) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["tenants"][0]["quota"]["cpu"] = "4"  # textcls-premium: 6 replicas + 1 surge x 1 cpu = 7

    declared, error = declared_before_failing(params_with(raw_params, edit), manifest, stack_config("prod"))
    assert declared == []
    message = str(error)
    assert "tenants[acme].quota is too small for ['cpu']" in message
    assert "deployments need cpu 7" in message and "quota allows cpu 4" in message


def test_variant_skipped_or_missing_from_the_manifest(raw_params, manifest: Manifest) -> None:
    def use_fp8(raw: dict[str, Any]) -> None:
        raw["deployments"][0]["variant"] = "fp8"

    declared, error = declared_before_failing(params_with(raw_params, use_fp8), manifest, stack_config("prod"))
    assert declared == []
    assert "variant 'fp8' was skipped by the pipeline (fp8 needs a Hopper-class GPU" in str(error)

    without = manifest.model_copy(update={"variants": [v for v in manifest.variants if v.name != "int8-dynamic"]})
    declared, error = declared_before_failing(parse_params(raw_params), without, stack_config("prod"))
    assert declared == []
    assert "manifest has no variant 'int8-dynamic'" in str(error)


def test_manifest_without_the_sweep_the_deployment_runs_with(raw_params, manifest: Manifest) -> None:
    """The HPA target comes from the sweep measured with the pod's own threads: without it, nothing is declared."""
    entry = manifest.variant("int8-dynamic")
    sweeps = [sweep for sweep in entry.sweeps if sweep.threads != 1]
    variants = [v.model_copy(update={"sweeps": sweeps}) if v.name == entry.name else v for v in manifest.variants]
    _, error = declared_before_failing(
        parse_params(raw_params), manifest.model_copy(update={"variants": variants}), stack_config("prod")
    )
    assert "has no onnxruntime sweep on cpu with 1 thread(s)" in str(error)
    assert "benchmark.threads including 1" in str(error)


def write_stack(tmp_path: Path, stack: str, edit) -> Path:
    from ruamel.yaml import YAML

    document = YAML(typ="safe").load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    edit(document["config"])
    path = tmp_path / f"Pulumi.{stack}.yaml"
    YAML(typ="safe").dump(document, path)
    return path


def test_stack_config_errors_name_the_key(tmp_path: Path) -> None:
    """Digests are required by the typed flag, never by the stack's name."""

    def typo(config: dict[str, Any]) -> None:
        config["infopt:imagez"] = config.pop("infopt:images")

    with pytest.raises(StackConfigError) as caught:
        load_stack_config(write_stack(tmp_path, "prod", typo))
    assert "infopt:images: Field required" in str(caught.value)
    assert "infopt:imagez: Extra inputs are not permitted" in str(caught.value)

    def undigested(config: dict[str, Any]) -> None:
        del config["infopt:images"]["vllm"]["digest"]

    with pytest.raises(StackConfigError, match=r"requireImageDigests is true but images \['vllm'\] have no digest"):
        load_stack_config(write_stack(tmp_path, "prod", undigested))

    def relaxed(config: dict[str, Any]) -> None:
        config["infopt:requireImageDigests"] = False

    assert load_stack_config(write_stack(tmp_path, "prod", relaxed)).require_image_digests is False
    assert load_stack_config(write_stack(tmp_path, "qa", relaxed)).require_image_digests is False

    def float_version(config: dict[str, Any]) -> None:
        config["infopt:kubernetesVersion"] = 1.33

    with pytest.raises(StackConfigError, match="infopt:kubernetesVersion: Input should be a valid string"):
        load_stack_config(write_stack(tmp_path, "prod", float_version))


def test_pulumi_config_path_reads_the_same_model_as_the_yaml_path() -> None:
    """__main__ reads `pulumi.Config`, where structured values are JSON strings and scalars plain strings."""
    from ruamel.yaml import YAML

    from infra.stack_config import from_pulumi_config, pulumi_config_keys

    raw = YAML(typ="safe").load((ROOT / "stacks" / "Pulumi.staging.yaml").read_text())["config"]
    as_pulumi = {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}
    pulumi.runtime.set_mocks(RecordingMocks(), project="infopt", stack="staging")
    pulumi.runtime.set_all_config(as_pulumi)
    try:
        loaded = from_pulumi_config(pulumi.Config("infopt"), pulumi_config_keys(), "staging")
    finally:
        pulumi.runtime.set_all_config({})
    assert loaded == stack_config("staging")


def stack_error(tmp_path: Path, edit) -> str:
    with pytest.raises(StackConfigError) as caught:
        load_stack_config(write_stack(tmp_path, "prod", edit))
    return str(caught.value)


def test_plain_http_store_is_an_explicit_choice(tmp_path: Path) -> None:
    def plain(config: dict[str, Any]) -> None:
        config["infopt:artifactStore"]["baseUrl"] = "http://store.internal/artifacts"
        del config["infopt:artifactStore"]["region"]

    assert "infopt:artifactStore: Value error, baseUrl 'http://store.internal/artifacts' is plain http" in (
        stack_error(tmp_path, plain)
    )

    def allowed(config: dict[str, Any]) -> None:
        plain(config)
        config["infopt:artifactStore"]["allowPlainHttp"] = True

    assert load_stack_config(write_stack(tmp_path, "prod", allowed)).artifact_store.scheme == "http"


def test_workload_identity_must_match_the_store(tmp_path: Path) -> None:
    def gke_on_s3(config: dict[str, Any]) -> None:
        config["infopt:workloadIdentity"] = {
            "provider": "gke",
            "gcpServiceAccount": "reader@proj-1.iam.gserviceaccount.com",
        }

    assert "baseUrl is s3:// but workloadIdentity.provider is gke" in stack_error(tmp_path, gke_on_s3)

    def eks_without_role(config: dict[str, Any]) -> None:
        config["infopt:workloadIdentity"] = {"provider": "eks"}

    assert "provider eks needs awsRoleArn" in stack_error(tmp_path, eks_without_role)


def test_duplicate_tenants_in_the_stack_are_rejected(tmp_path: Path) -> None:
    def twice(config: dict[str, Any]) -> None:
        config["infopt:tenants"] = ["acme", "globex", "acme"]

    assert "tenants lists ['acme'] more than once" in stack_error(tmp_path, twice)


def test_ingress_needs_its_parts(tmp_path: Path) -> None:
    def no_class(config: dict[str, Any]) -> None:
        del config["infopt:ingress"]["className"]

    assert "mode ingress needs `className`" in stack_error(tmp_path, no_class)

    def no_gateway(config: dict[str, Any]) -> None:
        config["infopt:ingress"] = {"mode": "gatewayApi", "domain": "x.example.com", "controllerNamespace": "gw"}

    assert "mode gatewayApi needs `gateway`" in stack_error(tmp_path, no_gateway)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda raw: raw["tenants"].append({**raw["tenants"][1]}),
            "tenants: duplicate names in ['acme', 'globex', 'initech', 'globex']",
        ),
        (
            lambda raw: raw["deployments"][1].update(tenants=["globex", "globex"]),
            "tenants ['globex'] listed more than once",
        ),
        (
            lambda raw: raw["tenants"].append({**raw["tenants"][1], "name": "shared-textcls-shared"}),
            "tenant name 'shared-textcls-shared' starts with 'shared-', which is reserved",
        ),
        (
            lambda raw: raw["deployments"][0].update(name="1textcls"),
            "deployment name '1textcls' is not a DNS-1035 label",
        ),
        (
            lambda raw: raw["deployments"].append({**raw["deployments"][0]}),
            "deployments: duplicate names in ['textcls-premium', 'textcls-shared', 'textcls-premium']",
        ),
    ],
)
def test_params_a_cluster_would_reject_fail_at_params(raw_params, edit, message: str) -> None:
    with pytest.raises(ParamsError) as caught:
        params_with(raw_params, edit)
    assert message in str(caught.value)


def test_override_that_would_pin_the_hpa_is_rejected(raw_params, manifest) -> None:
    config = stack_config("dev")
    pinned = config.model_copy(
        update={"replica_overrides": {**config.replica_overrides, "textcls-premium": ReplicaBounds(min=2, max=2)}}
    )
    declared, error = declared_before_failing(parse_params(raw_params), manifest, pinned)
    assert declared == []
    assert "infopt:replicaOverrides.textcls-premium: replicas 2..2 would pin the HPA at 2" in str(error)


def test_dev_overrides_replace_params_bounds_and_leave_room_to_scale(raw_params, manifest) -> None:
    topology = resolve(parse_params(raw_params), manifest, stack_config("dev"))
    assert {p.deployment.name: (p.min_replicas, p.max_replicas) for p in topology.services} == {
        "textcls-premium": (1, 2),  # params 2..6, overrides min 1 and max 2 (a clamp made it 2..2)
        "textcls-shared": (1, 2),
    }


def test_high_availability_stack_needs_two_replicas(raw_params, manifest) -> None:
    config = stack_config("prod").model_copy(update={"replica_overrides": {}})  # params: textcls-shared min 1
    declared, error = declared_before_failing(parse_params(raw_params), manifest, config)
    assert declared == []
    assert "deployments[textcls-shared]: min replicas 1 on a highAvailability stack" in str(error)


def gpu(raw: dict[str, Any]) -> None:
    raw["deployments"][0]["resources"]["gpu"] = 1
    raw["tenants"][0]["quota"]["gpu"] = 7


def test_gpu_deployment_without_node_selector_or_toleration(raw_params, cuda_manifest) -> None:
    config = stack_config("prod").model_copy(update={"gpu_node_selector": {}, "gpu_tolerations": []})
    declared, error = declared_before_failing(params_with(raw_params, gpu), cuda_manifest, config)
    assert declared == []
    assert "deployments[textcls-premium] requests 1 GPU(s) but the stack sets neither" in str(error)


def test_gpu_rollout_surge_needs_a_spare_gpu_in_the_quota(raw_params, cuda_manifest) -> None:
    def tight(raw: dict[str, Any]) -> None:
        gpu(raw)
        raw["tenants"][0]["quota"]["gpu"] = 6  # max 6 replicas, plus the surge pod = 7

    declared, error = declared_before_failing(params_with(raw_params, tight), cuda_manifest, stack_config("prod"))
    assert declared == []
    assert "tenants[acme].quota is too small for ['nvidia.com/gpu']" in str(error)
    assert "7 pods (max 6 + surge 1)" in str(error)


def test_gpu_rollout_in_place_only_with_two_replicas(raw_params, cuda_manifest) -> None:
    def single(raw: dict[str, Any]) -> None:
        gpu(raw)
        raw["deployments"][0]["replicas"] = {"min": 1, "max": 3}

    config = stack_config("staging").model_copy(update={"gpu_rollout": "inPlace"})
    declared, error = declared_before_failing(params_with(raw_params, single), cuda_manifest, config)
    assert declared == []
    assert "gpuRollout inPlace with min replicas 1 replaces the only pod" in str(error)
    plan = resolve(params_with(raw_params, gpu), cuda_manifest, config).services[0]  # params min 2
    assert (plan.max_surge, plan.max_unavailable) == (0, 1)


def test_generated_namespaces_must_not_collide(raw_params, manifest) -> None:
    from infra.topology import TopologyError, _check_namespaces

    topology = resolve(parse_params(raw_params), manifest, stack_config("prod"))
    shared = next(plan for plan in topology.services if plan.shared)
    impostor = parse_params(raw_params).tenants[0].model_copy(update={"name": "shared-textcls-shared"})
    with pytest.raises(TopologyError, match="inference-shared-textcls-shared: tenant shared-textcls-shared, shared"):
        _check_namespaces([shared], (impostor,))
