from __future__ import annotations

from tests.infra.planning import analyzer  # noqa: F401  (fixture: the pack's analyzer server)
