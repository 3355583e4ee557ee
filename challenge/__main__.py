"""`python -m challenge`: the ladder without the `infopt` CLI (GPU hosts without typer); same options."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from challenge.agent_input import AGENT_FILE
from challenge.ladder import LadderError, LadderOptions, run_ladder
from infopt.device import DeviceError


def parse(argv: list[str] | None = None) -> LadderOptions:
    parser = argparse.ArgumentParser(prog="python -m challenge", description="The measured optimization ladder.")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--reduced", action="store_true", help="the short form (CI): fewer cells, shorter runs")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/challenge/<device>")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--teacher", type=Path, default=None, help="default artifacts/variants/fp32/hf")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default: the preset's)")
    parser.add_argument("--agent-file", type=Path, default=AGENT_FILE)
    parser.add_argument("--no-gateway", action="store_true", help="model-level numbers only")
    parser.add_argument("--threads", type=int, default=None, help="CPU engines' intra-op threads")
    args = parser.parse_args(argv)
    return LadderOptions(
        device=args.device,
        reduced=args.reduced,
        out=args.out,
        params=args.params,
        teacher=args.teacher,
        budget_s=args.budget_s,
        agent_file=args.agent_file,
        gateway=not args.no_gateway,
        threads=args.threads,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # `timeout` sends SIGTERM: turn it into KeyboardInterrupt so gateway children are stopped and the
    # partial ladder.json is written by the finally blocks on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_ladder(parse(argv))
    except (LadderError, DeviceError) as error:
        print(f"challenge: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:
        print(f"challenge: interrupted ({error}); the partial result is in ladder.json", file=sys.stderr)
        return 3
    return 0 if result.status in ("complete", "partial") else 1


if __name__ == "__main__":
    sys.exit(main())
