"""Run dvc.yaml's stage commands in file order, without dvc (for hosts where dvc is not installed).

    python3 scripts/run_stages.py --skip prepare [--until evaluate] [--timings metrics/stage_seconds.json]

Each stage runs exactly its `cmd` from dvc.yaml, in the repository root, with `python` replaced by this
interpreter (some hosts have only `python3`). No caching and no dependency checks: every stage not
skipped runs. A skipped stage's outputs must already exist (e.g. data/prepared and artifacts/tokenizer
carried from another machine when `prepare` is skipped). Stops at the first stage that fails.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]


def stage_commands(dvc_yaml: Path) -> list[tuple[str, str, list[str]]]:
    """(stage, cmd, outs) in the order dvc.yaml lists them."""
    stages = YAML(typ="safe").load(dvc_yaml.read_text())["stages"]
    result = []
    for name, stage in stages.items():
        outs = [next(iter(item)) if isinstance(item, dict) else item for item in stage.get("outs", [])]
        result.append((name, stage["cmd"], outs))
    return result


def with_interpreter(cmd: str) -> list[str]:
    argv = shlex.split(cmd)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", action="append", default=[], help="stage to skip (repeatable); its outs must exist")
    parser.add_argument("--until", help="stop after this stage")
    parser.add_argument("--timings", type=Path, help="write {stage: seconds} here")
    args = parser.parse_args()
    stages = stage_commands(REPO / "dvc.yaml")
    unknown = set(args.skip) - {name for name, _, _ in stages}
    if args.until:
        unknown |= {args.until} - {name for name, _, _ in stages}
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; dvc.yaml has {[name for name, _, _ in stages]}")
    timings: dict[str, float] = {}
    for name, cmd, outs in stages:
        if name in args.skip:
            missing = [out for out in outs if not (REPO / out).exists()]
            if missing:
                print(f"== {name}: skipped, but its outputs {missing} do not exist", file=sys.stderr)
                return 2
            print(f"== {name}: skipped (outputs present)", flush=True)
            continue
        print(f"== {name}: {cmd}", flush=True)
        began = time.perf_counter()
        code = subprocess.run(with_interpreter(cmd), cwd=REPO).returncode
        timings[name] = round(time.perf_counter() - began, 1)
        print(f"== {name}: exit {code} after {timings[name]} s", flush=True)
        if args.timings:
            args.timings.parent.mkdir(parents=True, exist_ok=True)
            args.timings.write_text(json.dumps(timings, indent=2) + "\n")
        if code != 0:
            return code
        if name == args.until:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
