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
from infra.plan import RecordingMocks
from infra.program import build
from infra.stack_config import StackConfigError, load_stack_config
from infra.topology import TopologyError
from tests.infra.planning import ROOT, params_with, stack_config


def declared_before_failing(params, manifest: Manifest, config) -> tuple[list, BaseException]:
    """Run build() under recording mocks; returns what was declared and the error it raised."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="infopt", stack="prod", preview=True)
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


def test_manifest_without_the_knee_of_the_class(raw_params, manifest: Manifest) -> None:
    entry = manifest.variant("int8-dynamic")
    knees = {name: knee for name, knee in entry.sla_knees.items() if name != "premium"}
    variants = [v.model_copy(update={"sla_knees": knees}) if v.name == entry.name else v for v in manifest.variants]
    _, error = declared_before_failing(
        parse_params(raw_params), manifest.model_copy(update={"variants": variants}), stack_config("prod")
    )
    assert "has no sla_knees['premium'] (it has ['batch', 'standard'])" in str(error)


def write_stack(tmp_path: Path, stack: str, edit) -> Path:
    from ruamel.yaml import YAML

    document = YAML(typ="safe").load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    edit(document["config"])
    path = tmp_path / f"Pulumi.{stack}.yaml"
    YAML(typ="safe").dump(document, path)
    return path


def test_stack_config_errors_name_the_key(tmp_path: Path) -> None:
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

    with pytest.raises(StackConfigError, match="stack 'prod' must pin images by digest"):
        load_stack_config(write_stack(tmp_path, "prod", relaxed))
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
