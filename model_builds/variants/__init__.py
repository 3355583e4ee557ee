"""Stage 3: one folder per enabled variant under artifacts/variants/, each with a variant.json.

Import `VariantBuild` / `load_variant_build` from here; the builders live in one module per kind and
`build.py` dispatches on `variant.kind`.
"""

from __future__ import annotations

from model_builds.variants.record import (
    VARIANTS_DIR,
    VariantBuild,
    VariantBuildError,
    load_variant_build,
    make_artifact,
    write_variant_build,
)

__all__ = [
    "VARIANTS_DIR",
    "VariantBuild",
    "VariantBuildError",
    "load_variant_build",
    "make_artifact",
    "write_variant_build",
]
