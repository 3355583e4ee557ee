"""`infopt images` sub-commands: build the serving images (docker or podman), tagged by content."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.callback()
def _images() -> None:
    """Build the serving images of serving_images/ with docker or podman."""


@app.command("build")
def build_command(
    image: list[str] = typer.Option([], help="image to build (repeatable; default: all of serving_images/)"),
    engine: str | None = typer.Option(None, help="podman | docker (default: podman if installed, else docker)"),
    base_image: str | None = typer.Option(
        None, help="BASE_IMAGE for every image (default: each Dockerfile's pinned public image)"
    ),
    local_base: bool = typer.Option(
        False, help="build a Debian base from Debian's archive with mmdebstrap (no image registry needed)"
    ),
    wheelhouse: bool = typer.Option(
        True, help="install from build/wheelhouse/<image> filled by this host's pip (the build stays offline)"
    ),
    force: bool = typer.Option(False, help="rebuild even when an image with the same content tag exists"),
    prune: bool = typer.Option(False, help="remove older content tags of the images built"),
    report: Path | None = typer.Option(None, help="write sizes and build times as JSON (with the fingerprint)"),
) -> None:
    """Build the images and tag each by the sha256 of what its build reads; prints the references."""
    from harness.images import (
        IMAGES,
        BuildPlan,
        ContainerEngine,
        ImageBuildError,
        base_ref,
        build_base,
        build_image,
        load_average,
        stale_refs,
    )

    unknown = [name for name in image if name not in IMAGES]
    if unknown:
        console.print(f"[red]unknown image(s) {unknown}; serving_images/ has {sorted(IMAGES)}[/red]")
        raise typer.Exit(2)
    if local_base and base_image:
        console.print("[red]give --base-image or --local-base, not both[/red]")
        raise typer.Exit(2)
    load_at_start = load_average()
    started = time.monotonic()
    try:
        container_engine = ContainerEngine.detect(engine)
        base: dict[str, object] | None = None
        replaced: str | None = None  # the local base that --force replaces
        if local_base:
            base_started = time.monotonic()
            replaced = container_engine.image_id(base_ref()) if force and container_engine.exists(base_ref()) else None
            base_image, base_built = build_base(container_engine, force=force)
            base = {
                "ref": base_image,
                "id": container_engine.image_id(base_image),
                "size_bytes": container_engine.image_size(base_image),
                "built": base_built,
                "build_s": round(time.monotonic() - base_started, 1) if base_built else None,
            }
            console.print(f"base {base_image} ({'built' if base_built else 'reused'})")
        plan = BuildPlan(
            engine=container_engine,
            base_image=base_image,
            images=tuple(IMAGES[name] for name in image) if image else tuple(IMAGES.values()),
            use_wheelhouse=wheelhouse,
            force=force,
        )
        built = []
        for spec in plan.images:
            console.print(f"{spec.name}: building (log: build/images/{spec.name}.log)")
            built.append(build_image(plan, spec))
    except ImageBuildError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None

    table = Table(title=f"serving images ({container_engine.command})")
    for column in ("image", "reference", "MB", "build s", "wheelhouse MB"):
        table.add_column(column, overflow="fold")
    for item in built:
        table.add_row(
            item.name,
            item.ref,
            f"{item.size_bytes / 1e6:.0f}",
            "reused" if not item.built else f"{item.build_s:.0f}",
            "-" if item.wheelhouse_bytes is None else f"{item.wheelhouse_bytes / 1e6:.0f}",
        )
    console.print(table)
    if report is not None:
        from dataclasses import asdict

        from infopt.fingerprint import collect

        document = {
            "title": "Serving images built by `infopt images build` (sizes as the engine reports them)",
            "command": shlex.join(["infopt", *sys.argv[1:]]),
            "engine": f"{container_engine.command} {container_engine.version()}",
            "load_average_at_start": load_at_start,
            "base": base,
            "images": [asdict(item) for item in built],
            "total_s": round(time.monotonic() - started, 1),
            "fingerprint": collect().model_dump(mode="json"),
        }
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(document, indent=2) + "\n")
        console.print(f"report: {report}")
    if prune:  # after the report: removing old images is not part of the build
        try:
            for item in built:
                stale = stale_refs(container_engine, item.name, item.ref)
                container_engine.remove(stale)
                for ref in stale:
                    console.print(f"removed {ref}")
            if replaced and base is not None and replaced != base["id"]:
                container_engine.remove([replaced])  # the base --force replaced, now used by no image
                console.print(f"removed the replaced base {replaced[:12]}")
        except ImageBuildError as error:
            console.print(f"[red]{error}[/red]", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None
