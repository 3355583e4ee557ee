"""A stack's plan, run on this machine: images built, bundles served on 127.0.0.1, pods played by podman.

`infopt infra run` and the tests call `run_stack` with the plan of `infra.plan.plan`; harness/kube_play.py
says what is adapted to run here and what podman does not enforce.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifact_server import ArtifactServer
from harness.kube_play import FETCH_CONTAINER, Localization, LocalPod, kube_play, localize, serving_documents

# Which serving_images/ image stands in for each image key of the stack config (infopt:images): the
# gateways are built from their own Dockerfiles; the official vLLM image (GPU) is replaced on this CPU
# machine by the vllm-cpu image, which takes the same arguments.
LOCAL_IMAGE_FOR_KEY = {"gateway-onnxruntime": "gateway-onnxruntime", "gateway-vllm": "gateway-vllm", "vllm": "vllm-cpu"}


class StackRunError(ValueError):
    """The plan cannot be run here as asked (an image without a local build, a missing bundle)."""


def planned_images(documents: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every image reference the planned Deployments' pods run (init containers included)."""
    return {
        container["image"]
        for doc in serving_documents(documents)
        if doc["kind"] == "Deployment"
        for container in [
            *doc["spec"]["template"]["spec"].get("initContainers", []),
            *doc["spec"]["template"]["spec"]["containers"],
        ]
    }


def image_keys_for(references: Iterable[str], stack_images: Mapping[str, str]) -> dict[str, str]:
    """planned reference -> the stack config's image key (infopt:images) it came from."""
    by_ref = {ref: key for key, ref in stack_images.items()}
    unknown = sorted(ref for ref in references if ref not in by_ref)
    if unknown:
        raise StackRunError(f"planned images {unknown} are not in the stack's infopt:images {sorted(by_ref)}")
    return {ref: by_ref[ref] for ref in references}


def local_images_needed(references: Iterable[str], stack_images: Mapping[str, str]) -> dict[str, str]:
    """planned reference -> the serving_images/ image to build for it."""
    keys = image_keys_for(references, stack_images)
    missing = sorted({key for key in keys.values() if key not in LOCAL_IMAGE_FOR_KEY})
    if missing:
        raise StackRunError(f"no serving_images/ image builds the stack's image key(s) {missing}")
    return {ref: LOCAL_IMAGE_FOR_KEY[key] for ref, key in keys.items()}


def planned_artifacts(documents: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Deployment name -> the sha256 its init container fetches and verifies."""
    found: dict[str, str] = {}
    for doc in serving_documents(documents):
        if doc["kind"] != "Deployment":
            continue
        for init in doc["spec"]["template"]["spec"].get("initContainers", []):
            if init["name"] == FETCH_CONTAINER:
                args = [str(arg) for arg in init["args"]]
                found[doc["metadata"]["name"]] = args[args.index("--sha256") + 1]
    return found


def check_bundles(documents: Iterable[Mapping[str, Any]], bundles: Path) -> None:
    """Every fetched artifact has its `<sha256>.tar.gz` in `bundles` (`infopt artifact pack` writes them)."""
    missing = {
        name: sha for name, sha in planned_artifacts(documents).items() if not (bundles / f"{sha}.tar.gz").is_file()
    }
    if missing:
        detail = ", ".join(f"{name}: {sha}.tar.gz" for name, sha in sorted(missing.items()))
        raise StackRunError(f"{bundles} lacks the bundle(s) {detail}; write them with `infopt artifact pack <folder>`")


@dataclass
class StackRun:
    """The running pods of one plan and the artifact server their init containers fetched from."""

    pods: list[LocalPod]
    artifacts: ArtifactServer

    def pod(self, deployment: str) -> LocalPod:
        for pod in self.pods:
            if pod.deployment == deployment:
                return pod
        raise KeyError(f"no pod for Deployment {deployment!r}; running {[p.deployment for p in self.pods]}")


@contextmanager
def run_stack(
    documents: Sequence[Mapping[str, Any]],
    *,
    artifact_base_url: str,
    images: Mapping[str, str],
    bundles: Path,
    folder: Path,
    suffix: str | None = None,
) -> Iterator[StackRun]:
    """Serve `bundles` on 127.0.0.1, localize the plan's Deployments and play them; everything is removed
    on exit. `images` maps each planned image reference to a local image; `suffix` (default: random)
    keeps the pods' names apart from any other run on this machine."""
    check_bundles(documents, bundles)
    with ArtifactServer(bundles) as server:
        localization = Localization(
            images=images,
            artifact_base_url=artifact_base_url,
            local_artifact_url=server.base_url,
            suffix=f"-{secrets.token_hex(3)}" if suffix is None else suffix,
        )
        with kube_play(localize(documents, localization), folder) as pods:
            yield StackRun(pods, server)
