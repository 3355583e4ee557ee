"""`infopt infra plan`: exit codes, the summary table, and the plan files."""

from __future__ import annotations

import json
from pathlib import Path

from ruamel.yaml import YAML
from typer.testing import CliRunner

from cli.infra import app
from tests.infra.planning import FIXTURE_MANIFEST, ROOT

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["plan", *args, "--stacks-dir", str(ROOT / "stacks")], catch_exceptions=False)


def test_plan_prod_writes_manifests_and_summary(tmp_path: Path) -> None:
    result = invoke(
        "--stack",
        "prod",
        "--params",
        str(ROOT / "params.yaml"),
        "--manifest",
        str(FIXTURE_MANIFEST),
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert "PLAN for stack prod" in result.output and "policies: all clean" in result.output
    summary = json.loads((tmp_path / "prod.summary.json").read_text())
    assert summary["ok"] is True and summary["violations"] == [] and summary["schema_errors"] == []
    assert summary["counts_by_kind"]["Deployment"] == 2
    assert "PLAN" in summary["title"] and "nothing was applied" in summary["title"]
    documents = list(YAML(typ="safe").load_all((tmp_path / "prod.yaml").read_text()))
    assert len(documents) == summary["resources"]
    assert (tmp_path / "prod.yaml").read_text().startswith("# infopt infrastructure PLAN")


def test_plan_exit_codes_name_the_problem(tmp_path: Path) -> None:
    unknown = invoke("--stack", "qa", "--manifest", str(FIXTURE_MANIFEST), "--out", str(tmp_path))
    assert unknown.exit_code == 2 and "unknown stack 'qa'" in unknown.output
    missing = invoke(
        "--stack",
        "dev",
        "--params",
        str(ROOT / "params.yaml"),
        "--manifest",
        str(tmp_path / "none.json"),
        "--out",
        str(tmp_path),
    )
    assert missing.exit_code == 2 and "ManifestError" in missing.output

    params = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
    params["deployments"][0]["variant"] = "pruned-heads-25"  # over the accuracy budget in the fixture manifest
    edited = tmp_path / "params.yaml"
    YAML(typ="safe").dump(params, edited)
    violation = invoke(
        "--stack", "prod", "--params", str(edited), "--manifest", str(FIXTURE_MANIFEST), "--out", str(tmp_path)
    )
    assert violation.exit_code == 1
    assert "artifact-is-deployable" in violation.output
    assert json.loads((tmp_path / "prod.summary.json").read_text())["ok"] is False


def test_policy_config_carries_the_manifest_decisions(tmp_path: Path) -> None:
    from infopt.manifest import load_manifest

    out = tmp_path / "prod.policy-config.json"
    result = invoke_cmd("policy-config", "--stack", "prod", "--manifest", str(FIXTURE_MANIFEST), "--out", str(out))
    assert result.exit_code == 0, result.output
    config = json.loads(out.read_text())
    assert config["images-pinned-by-digest"] == {"requireImageDigests": True}
    decisions = config["artifact-is-deployable"]["artifacts"]
    manifest = load_manifest(FIXTURE_MANIFEST)
    over = manifest.variant("pruned-heads-25").artifact("onnxruntime").sha256
    within = manifest.variant("int8-dynamic").artifact("onnxruntime").sha256
    assert decisions[over]["deployable"] is False and decisions[within]["deployable"] is True
    assert decisions[over]["variant"] == "pruned-heads-25"
    built = sum(len(v.artifacts) for v in manifest.variants)
    assert len(decisions) == built
    assert (
        f"{sum(d['deployable'] for d in decisions.values())} of {built} manifest artifacts deployable" in result.output
    )


def invoke_cmd(*args: str):
    return runner.invoke(app, [*args, "--stacks-dir", str(ROOT / "stacks")], catch_exceptions=False)
