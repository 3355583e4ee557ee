from __future__ import annotations

from tests.infra.planning import analyzer, cuda_manifest, manifest, raw_params  # noqa: F401  (fixtures)
