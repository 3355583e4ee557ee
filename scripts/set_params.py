"""Set params.yaml keys in place, as `dvc exp run -S key=value` does, for hosts without dvc (the GPU host).

    python3 scripts/set_params.py device=cuda model.preset=bert-base 'benchmark.engines=[torch]'

Values are YAML (so `[torch]`, `null`, `true` work); list items are addressed by index or, for lists of
mappings with a `name`, by name (`variants.fp8.enabled=false`). The file keeps its comments (ruamel.yaml
round trip) and is validated against the schema afterwards.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _child(node: Any, key: str) -> Any:
    if isinstance(node, list):
        if key.isdigit():
            return node[int(key)]
        return next(item for item in node if isinstance(item, dict) and item.get("name") == key)
    return node[key]


def set_key(document: Any, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = document
    for part in parents:
        node = _child(node, part)
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def main(assignments: list[str]) -> None:
    from infopt.params import parse_params

    yaml = YAML()
    document = yaml.load(PARAMS.read_text())
    for assignment in assignments:
        key, _, raw = assignment.partition("=")
        if not _:
            raise SystemExit(f"{assignment!r} is not key=value")
        set_key(document, key, YAML(typ="safe").load(io.StringIO(raw)))
    stream = io.StringIO()
    yaml.dump(document, stream)
    parse_params(YAML(typ="safe").load(stream.getvalue()), str(PARAMS))  # fails naming the field
    PARAMS.write_text(stream.getvalue())
    print(f"params.yaml: {' '.join(assignments)}")


if __name__ == "__main__":
    main(sys.argv[1:])
