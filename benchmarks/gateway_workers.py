"""How many requests a second the gateway carries within the SLA, by its number of HTTP worker processes.

Through the gateway the host sets the ceiling on the GPU (docs/challenge.md): the 2026-12-01 ladder's gateway
runs (`benchmarks/results/challenge/cuda/ladder.json`, per-process CPU in each level) had its six HTTP workers
at 0.6-0.98 of a core each, the admission process's event loop at about 0.55 and the four load clients at
0.1. This runs the ladder's final configuration through the ladder's own gateway (`challenge.gateway`:
same spec, same Little's-law levels bisected at the SLA, same load client) once per `--workers` count, on
one engine (or `--engine-replicas` engines behind the one queue), so the counts differ in nothing else; with `--replicas` also as several independent gateways
(each its own admission process and engine replica on the one device, as pods of one deployment sharing a
GPU), the connections spread over them.

The engine is the final configuration's spec from `--ladder` (a ladder.json) with its model folder replaced
by `--model-dir` (e.g. an untrained bert-base of the pipeline's architecture on a host where the trained
variant is gone: the shapes, not the weights, set the time; a pruned variant's spec on an unpruned model
serves more heads, so the rates are not the ladder's). Writes JSON with the fingerprint.

    python -m benchmarks.gateway_workers --ladder benchmarks/results/challenge/cuda/ladder.json \
        --model-dir artifacts/variants/fp32/hf --workers 6 9 12 --out gateway_workers.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from challenge.config import preset
from challenge.engines import EngineSpec
from challenge.gateway import connection_levels, gateway_spec_for, measure_gateway
from challenge.ladder import gateway_batching
from infopt.fingerprint import collect
from infopt.params import BatchingParams, Params, load_params
from infopt.paths import PREPARED_DIR, TOKENIZER_DIR
from model_builds.data import read_labels, read_split


def final_configuration(ladder: dict) -> tuple[dict, dict, float]:
    """(engine spec, batching, model-level req/s) of the configuration the ladder carried last."""
    final = next(step["carried"] for step in reversed(ladder["steps"]) if step.get("carried"))
    if not final.get("batching"):
        raise SystemExit("the ladder's final configuration has no batching (it never reached step 3)")
    return final["engine"], final["batching"], float(final["point"]["throughput_rps"])


def build_untrained(out: Path, params: Params, preset: str, prune_amount: float) -> dict[str, Any]:
    """An untrained classifier of the pipeline's `preset`, pruned as the structured_heads_ffn variant is at
    `prune_amount` (0: not pruned), written to `out`: the ladder's served shapes on a host where the trained
    variant is gone (a batch's time depends on the shapes, not the weights)."""
    from transformers import PreTrainedTokenizerFast

    from model_builds.modeling import new_classifier, save_classifier
    from model_builds.variants.pruned import prune_heads_and_ffn

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(TOKENIZER_DIR))
    labels = read_labels(PREPARED_DIR)
    model = new_classifier(params.model.presets[preset], tokenizer, params.model.max_seq_len, labels, params.seed)
    pruned = prune_heads_and_ffn(model, prune_amount) if prune_amount else {}
    save_classifier(model, tokenizer, out)
    return {"weights": "untrained (seeded)", "preset": preset, "prune_amount": prune_amount, **pruned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ladder", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True, help="the HF folder the engine serves")
    parser.add_argument(
        "--untrained", metavar="PRESET", default=None,
        help="first write an untrained model of this params preset (e.g. bert-base) to --model-dir",
    )  # fmt: skip
    parser.add_argument("--prune", type=float, default=0.0, help="with --untrained: structured_heads_ffn amount")
    parser.add_argument("--workers", type=int, nargs="+", default=[6, 9, 12])
    parser.add_argument(
        "--replicas", type=int, nargs="+", default=[1],
        help="independent gateways (each its own admission process and engine) on the one device, per worker count",
    )  # fmt: skip
    parser.add_argument(
        "--engine-replicas", type=int, default=None,
        help="engines behind each gateway's one queue (default: params serving.engine_replicas)",
    )  # fmt: skip
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--clients", type=int, default=None, help="load client processes (default: the preset's)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    began = time.time()
    load_at_start = [round(value, 2) for value in os.getloadavg()]
    params = load_params(args.params)
    model = build_untrained(args.model_dir, params, args.untrained, args.prune) if args.untrained else None
    ladder = json.loads(args.ladder.read_text())
    engine_values, batching_values, model_rps = final_configuration(ladder)
    engine = EngineSpec.model_validate({**engine_values, "model_dir": str(args.model_dir)})
    carried = BatchingParams.model_validate(batching_values)
    batching = gateway_batching(engine, carried.max_batch_size, carried.max_wait_ms)  # as the ladder serves it
    config = preset(engine.device, False, params.model.max_seq_len, None, None)
    clients = args.clients or config.client_processes
    sla_ms = params.sla_classes["premium"].p99_ms
    assert sla_ms is not None
    texts = [example.text for example in read_split(PREPARED_DIR, "test")][:512]
    runs = []
    for replicas, workers in [(r, w) for r in args.replicas for w in args.workers]:
        levels = connection_levels(
            model_rps, sla_ms, args.texts_per_request, workers * replicas, config.connection_factors
        )
        spec = gateway_spec_for(
            engine, batching, params, labels=read_labels(PREPARED_DIR), tokenizer_dir=TOKENIZER_DIR,
            levels=levels, processes=workers, engine_replicas=args.engine_replicas,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as scratch:
            run = measure_gateway(
                spec,
                client_processes=clients,
                connection_levels=levels,
                texts=texts,
                warmup_s=config.gateway_warmup_s,
                duration_s=config.gateway_duration_s,
                ready_timeout_s=config.ready_timeout_s,
                workdir=Path(scratch),
                p99_sla_ms=sla_ms,
                refine=config.gateway_refine,
                texts_per_request=args.texts_per_request,
                replicas=replicas,
            )
        runs.append({"replicas": replicas, "workers": workers, "run": run.model_dump(mode="json")})
        print(
            f"{replicas} gateway(s) x {workers} HTTP workers x {run.engine_replicas} engine(s): {run.throughput_rps or 0:,.0f} req/s ({run.texts_per_s or 0:,.0f} texts/s) "
            f"within the SLA: {run.meets_sla}, p99 {run.latency_p99_ms or 0:.1f} ms",
            flush=True,
        )
    result = {
        "benchmark": "gateway_workers",
        "ladder": str(args.ladder),
        "ladder_git_sha": ladder.get("fingerprint", {}).get("git_sha"),
        "engine": engine.model_dump(mode="json"),
        "model": model or {"weights": f"as found in {args.model_dir}"},
        "batching": batching.model_dump(),
        "model_level_rps_in_ladder": model_rps,
        "texts_per_request": args.texts_per_request,
        "client_processes": clients,
        "p99_sla_ms": sla_ms,
        "runs": runs,
        "load_average_at_start": load_at_start,
        "wall_s": round(time.time() - began, 1),
        "fingerprint": collect(engine.device, repo=Path(".")).model_dump(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
