"""Comment- and style-preserving params edits: the diff is exactly the changed lines, the schema re-validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from agent.contract import ParamChange
from agent.params_edit import ParamsEditError, apply_changes, dvc_key, parse_path, render
from infopt.params import ParamsError

ROOT = Path(__file__).resolve().parents[2]
PARAMS = (ROOT / "params.yaml").read_text()
# The same params with two mappings in flow style and a double-quoted scalar: edits keep whatever style a file has.
SHARED_BLOCK = "  batching:\n    mode: dynamic\n    max_batch_size: 32\n    max_wait_ms: 10\n"
ACME_QUOTA = "  quota:\n    cpu: '8'\n    memory: 16Gi\n    gpu: 1\n    pods: 12\n"
assert PARAMS.count(SHARED_BLOCK) == 1 and PARAMS.count(ACME_QUOTA) == 1
FLOW = PARAMS.replace(SHARED_BLOCK, "  batching: {mode: dynamic, max_batch_size: 32, max_wait_ms: 10}\n").replace(
    ACME_QUOTA, '  quota: {cpu: "8", memory: 16Gi, gpu: 1, pods: 12}\n'
)


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def test_replica_change_rewrites_exactly_the_two_lines_and_keeps_everything_else() -> None:
    result = apply_changes(
        PARAMS,
        [
            ParamChange(path="deployments[textcls-premium].replicas.min", old=2, new=3),
            ParamChange(path="deployments[textcls-premium].replicas.max", old=6, new=5),
        ],
    )
    removed, added = changed_lines(result.diff)
    assert removed == ["    min: 2", "    max: 6"]
    assert added == ["    min: 3", "    max: 5"]
    before, after = PARAMS.splitlines(), result.after.splitlines()
    assert len(before) == len(after)
    premium = before.index("- name: textcls-premium")
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [before.index("    min: 2", premium), before.index("    max: 6", premium)]
    assert result.params.deployment("textcls-premium").replicas.min == 3
    assert result.params.deployment("textcls-premium").replicas.max == 5


def test_edit_keeps_a_trailing_comment_in_its_column() -> None:
    result = apply_changes(PARAMS, [ParamChange(path="device", old="auto", new="cuda")])
    removed, added = changed_lines(result.diff)
    assert len(removed) == len(added) == 1
    assert added[0].startswith("device: cuda ")
    assert added[0].index("#") == removed[0].index("#")
    assert added[0][added[0].index("#") :] == removed[0][removed[0].index("#") :]


def test_missing_key_is_inserted_into_a_flow_mapping_and_a_block_mapping() -> None:
    result = apply_changes(
        FLOW,
        [
            ParamChange(path="deployments[textcls-shared].batching.preferred_batch_sizes", old=None, new=[8, 16]),
            ParamChange(
                path="deployments[textcls-shared].autoscaling", old=None, new={"scale_down_stabilization_s": 120}
            ),
        ],
    )
    removed, added = changed_lines(result.diff)
    assert removed == ["  batching: {mode: dynamic, max_batch_size: 32, max_wait_ms: 10}"]
    assert added == [
        "  batching: {mode: dynamic, max_batch_size: 32, max_wait_ms: 10, preferred_batch_sizes: [8, 16]}",
        "  autoscaling: {scale_down_stabilization_s: 120}",
    ]
    block = apply_changes(
        PARAMS,
        [ParamChange(path="deployments[textcls-shared].batching.preferred_batch_sizes", old=None, new=[8, 16])],
    )
    assert changed_lines(block.diff) == ([], ["    preferred_batch_sizes: [8, 16]"])
    shared = result.params.deployment("textcls-shared")
    assert shared.batching is not None and shared.batching.preferred_batch_sizes == [8, 16]
    assert shared.autoscaling.scale_down_stabilization_s == 120


def test_quoted_scalar_keeps_its_quotes_and_floats_stay_floats() -> None:
    result = apply_changes(
        FLOW,
        [
            ParamChange(path="tenants[acme].quota.cpu", old="8", new="10"),
            ParamChange(path="train.lr", old=0.001, new=5e-05),
        ],
    )
    _, added = changed_lines(result.diff)
    assert '  quota: {cpu: "10", memory: 16Gi, gpu: 1, pods: 12}' in added
    assert "  lr: 5.0e-05" in added
    assert YAML(typ="safe").load(result.after)["train"]["lr"] == pytest.approx(5e-05)
    single = apply_changes(PARAMS, [ParamChange(path="tenants[acme].quota.cpu", old="8", new="10")])
    assert changed_lines(single.diff) == (["    cpu: '8'"], ["    cpu: '10'"])


def test_change_that_breaks_the_schema_is_refused_naming_the_field() -> None:
    with pytest.raises(ParamsError, match=r"deployments\.0\.replicas.*min 7 > max 6"):
        apply_changes(PARAMS, [ParamChange(path="deployments[textcls-premium].replicas.min", old=2, new=7)])


def test_stale_old_value_is_refused() -> None:
    with pytest.raises(ParamsEditError, match=r"replicas.min is 2 in params.yaml but the evidence was read with 3"):
        apply_changes(PARAMS, [ParamChange(path="deployments[textcls-premium].replicas.min", old=3, new=4)])


def test_unknown_paths_and_nested_creation_are_refused() -> None:
    with pytest.raises(ParamsEditError, match=r"no item named 'nope'"):
        apply_changes(PARAMS, [ParamChange(path="deployments[nope].replicas.min", old=None, new=1)])
    with pytest.raises(ParamsEditError, match=r"deployments\[textcls-premium\]\.autoscaling is absent"):
        apply_changes(PARAMS, [ParamChange(path="deployments[textcls-premium].autoscaling.metric", old=None, new="x")])


def test_key_paths_parse_and_map_to_dvc_indexes() -> None:
    data = YAML(typ="safe").load(PARAMS)
    assert dvc_key("deployments[textcls-shared].batching.max_wait_ms", data) == "deployments.1.batching.max_wait_ms"
    assert dvc_key("variants[3].calibration_samples", data) == "variants.3.calibration_samples"
    assert dvc_key("benchmark.batch_sizes", data) == "benchmark.batch_sizes"
    with pytest.raises(ParamsEditError):
        parse_path("a..b")


def test_render_quotes_only_what_yaml_would_misread() -> None:
    assert render("int8-dynamic") == "int8-dynamic"
    assert render("null") == '"null"'  # would read back as None
    assert render("1.5") == '"1.5"'  # would read back as a float
    assert render("a: b") == '"a: b"'
    assert render([1, 2.5, None, True]) == "[1, 2.5, null, true]"
