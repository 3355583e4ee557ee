"""Run a Pulumi Python program the way Pulumi's language host does, with mocks instead of an engine.

Usage: python langhost.py --project P --stack S --pwd DIR --out FILE PROGRAM

What `pulumi-language-python-exec` does, step for step: config from the PULUMI_CONFIG environment variable
(a JSON object of `project:key` -> string, structured values as JSON strings), the runtime configured for
project and stack, `os.chdir(--pwd)` (for `main: infra/` that is the infra folder), then
`runpy.run_path(PROGRAM, run_name="__main__")`. Only the engine side differs: Pulumi's MockMonitor records
each registration, and `pulumi.runtime.test` (the SDK's runner for mocked programs) stands in for
`run_in_stack`, which waits on a real engine. This file imports nothing of the project,
and the test starts it without PYTHONPATH, so the program has to find its project by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import runpy
import sys

import pulumi
import pulumi.runtime


class Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.records.append({"type": args.typ, "name": args.name, "inputs": args.inputs})
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, None]:
        return {}, None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", required=True)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--pwd", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("PROGRAM")
    args = parser.parse_args()
    out = os.path.abspath(args.out)

    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_all_config(pulumi.runtime.get_config_env(), pulumi.runtime.get_config_secret_keys_env())
    recorder = Recorder()
    pulumi.runtime.set_mocks(recorder, project=args.project, stack=args.stack, preview=True)
    sys.argv = [args.PROGRAM]
    os.chdir(args.pwd)
    error = None
    try:
        pulumi.runtime.test(lambda: runpy.run_path(args.PROGRAM, run_name="__main__"))()
    except Exception as exc:  # reported to the test, as the language host reports it to the engine
        error = f"{type(exc).__name__}: {exc}"
    with open(out, "w") as handle:
        json.dump({"cwd": os.getcwd(), "error": error, "records": recorder.records}, handle, default=str)
    return 0 if error is None else 32


if __name__ == "__main__":
    sys.exit(main())
