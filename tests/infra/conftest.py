from __future__ import annotations

from tests.infra.planning import manifest, raw_params  # noqa: F401  (fixtures)
