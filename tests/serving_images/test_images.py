"""Every serving image's Dockerfile agrees with the code it packages and the pod that runs it.

No container runtime is needed: the Dockerfiles are parsed, and what they name (base images, user, command,
flags, config paths, ports) is checked against the registered `infopt` CLI and the infra pod spec.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "serving_images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
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


def test_there_is_a_dockerfile_per_image() -> None:
    assert IMAGES.joinpath("gateway-vllm", "Dockerfile") in DOCKERFILES


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_command_and_flags_exist_in_the_infopt_cli(dockerfile: Path, infopt_commands: dict[str, Any]) -> None:
    words = image_command(parse_dockerfile(dockerfile))
    assert words[:1] == ["infopt"], f"{dockerfile}: the image does not run the infopt CLI: {words}"
    command = infopt_commands.get(words[1])
    assert command is not None, f"{dockerfile}: `infopt {words[1]}` is not a command ({sorted(infopt_commands)})"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [flag for flag in words[2:] if flag.startswith("--") and flag not in known]
    assert not unknown, f"{dockerfile}: `infopt {words[1]}` has no option(s) {unknown}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_config_paths_and_ports_match_the_code_and_the_pod(dockerfile: Path, infopt_commands: dict[str, Any]) -> None:
    from infra.serving_deployment import CONFIG_DIR
    from infra.topology import GATEWAY_PORT

    instructions = parse_dockerfile(dockerfile)
    words = image_command(instructions)
    flags = flag_values(words)
    command = infopt_commands[words[1]]
    defaults = {opt: param.default for param in command.params for opt in param.opts}
    volumes = {volume for item in instructions if item.keyword == "VOLUME" for volume in item.words()}
    for flag in ("--params", "--manifest"):
        if flag not in flags:
            continue
        path = Path(flags[flag])
        # The file the code reads by default is the one the pod's ConfigMap mounts under CONFIG_DIR.
        assert str(path.parent) == CONFIG_DIR, f"{dockerfile}: {flag} {path} is outside the pod's {CONFIG_DIR}"
        assert path.name == Path(str(defaults[flag])).name, f"{dockerfile}: {flag} {path} vs default {defaults[flag]}"
        assert CONFIG_DIR in volumes, f"{dockerfile}: {CONFIG_DIR} is not declared as a VOLUME"
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
