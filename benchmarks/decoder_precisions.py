"""Decode time per token of the built-in decoder at each precision, int4 at each accuracy level.

The tiny-llama recipe's decoder (the base of ``examples/tiny-llama.yaml``), exported as one
KV-cache graph, then written at fp32, dynamic int8 and int4 weight-only (``MatMulNBits``)
with ``accuracy_level`` 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) and 4 (int8). Each variant
is timed on one core, one ONNX Runtime thread (the ``cpu-1t`` profile's settings): one decode
step after a past of 64 tokens (batch 1), in interleaved rounds (each round visits every
variant in a new shuffled order: warm-up, then a fixed number of timed steps, its median),
the figure the median over rounds. Beside it: the session's peak memory
(:func:`paretoforge.evaluators.memory.session_peak_memory`) and how many of 32 greedy tokens
from a prompt of real text equal the fp32 graph's.

Usage:
    flock /work/notes/heavy.lock python benchmarks/decoder_precisions.py
    python benchmarks/decoder_precisions.py --rounds 3 --runs 100   # quicker
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, wait_quiet, write_result  # noqa: E402
from paretoforge.evaluators.memory import session_peak_memory  # noqa: E402
from paretoforge.kernels import apply_precision, graph_summary  # noqa: E402
from paretoforge.kernels.decoder_export import (  # noqa: E402
    decode_step_feeds,
    export_decoder_onnx,
    greedy_decode,
)
from paretoforge.models.recipes import recipe_checkpoint  # noqa: E402

VARIANTS: dict[str, tuple[str, int]] = {
    "fp32": ("fp32", 0), "int8": ("int8", 0),
    **{f"int4-acc{level}": ("int4", level) for level in (0, 1, 2, 3, 4)},
}
PAST = 64
PROMPT = "The with statement is used to wrap the execution of a block with methods"


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _round(session: Any, feeds: dict[str, np.ndarray], warmup: int, runs: int) -> float:
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=300, help="timed decode steps per round")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--wait-quiet", type=float, default=120.0)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "decoder_precisions.json")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch
    import transformers

    torch.set_num_threads(1)
    load_before = wait_quiet(args.wait_quiet)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [sorted(os.sched_getaffinity(0))[-1]])
    ckpt = recipe_checkpoint("tiny-llama")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(ckpt)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(ckpt))
    prompt = tok(PROMPT)["input_ids"]
    with tempfile.TemporaryDirectory() as d:
        fp32 = Path(d) / "fp32.onnx"
        layout = export_decoder_onnx(model, fp32)
        paths = {}
        for name, (precision, level) in VARIANTS.items():
            paths[name] = apply_precision(fp32, Path(d) / f"{name}.onnx", precision,
                                          int4_accuracy_level=level)
        sessions = {n: _session(p) for n, p in paths.items()}
        feeds = decode_step_feeds(layout, PAST)
        per_round: dict[str, list[float]] = {n: [] for n in paths}
        rng = random.Random(0)
        for _ in range(args.rounds):
            order = list(paths)
            rng.shuffle(order)
            for name in order:
                per_round[name].append(_round(sessions[name], feeds, args.warmup, args.runs))
        want = greedy_decode(sessions["fp32"], prompt, 32)
        results: dict[str, Any] = {}
        for name, path in paths.items():
            got = greedy_decode(sessions[name], prompt, 32)
            summary = graph_summary(path)
            mem = session_peak_memory(path, prompt_tokens=PAST)
            ms = float(np.median(per_round[name]))
            results[name] = {
                "decode_ms_per_token": round(ms, 4),
                "rounds_ms": [round(x, 4) for x in per_round[name]],
                "vs_fp32": round(ms / float(np.median(per_round["fp32"])), 3),
                "peak_memory_mb": mem["peak_mb"], "session_mb": mem["session_mb"],
                "greedy_tokens_equal_fp32": sum(a == b for a, b in zip(got, want, strict=True)),
                "initializer_bytes": summary["initializer_bytes"],
                "matmulnbits_accuracy_levels": summary.get("matmulnbits_accuracy_levels"),
            }
            same = results[name]["greedy_tokens_equal_fp32"]
            print(f"{name:10s} {ms:7.3f} ms/token  x{results[name]['vs_fp32']:.3f}  "
                  f"peak {mem['peak_mb']:6.1f} MB  greedy {same}/32", flush=True)
    write_result(args.out, {
        "benchmark": "decoder_precisions",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", *sys.argv]),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "machine": machine("onnxruntime", "torch", "transformers"),
        "onnxruntime": ort.__version__,
        "model": {"recipe": "tiny-llama", "checkpoint": str(ckpt),
                  "params": int(sum(p.numel() for p in model.parameters())),
                  "layers": int(model.config.num_hidden_layers)},
        "protocol": {"past": PAST, "batch": 1, "threads": 1, "rounds": args.rounds,
                     "runs_per_round": args.runs, "warmup": args.warmup, "pinned": True},
        "results": results,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
