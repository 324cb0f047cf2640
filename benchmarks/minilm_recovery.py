"""Recovery of pruned all-MiniLM-L6-v2 candidates: which settings reach the fidelity targets.

Builds candidates the way a search worker does (importance-ranked surgery, distillation from
the unpruned model, ONNX export with pooling, precision) from the bundle the search prepares
for ``examples/minilm-fidelity.yaml`` (its task parameters, ``n_train`` varied), and scores
them as the worker does: mean cosine of the ONNX sentence embeddings, one sentence per call,
to the unpruned model's, on the held-out sentences. Latency (``--latency``): ``cpu-1t`` p50 at
128 tokens, batch 1, on one pinned core, each candidate measured right after the unpruned fp32
model in the same round, several rounds; the ratio is the median of the per-round ratios (the
CPU is shared: back-to-back ratios are steadier than absolute times).

Targets (issue 3): (a) cosine >= 0.95 at <= 0.55x the unpruned latency; (b) cosine >= 0.85 at
<= 1/3 of it.

Usage (the runs behind BENCHMARKS.md; two --run lines in parallel, one per core):
    .venv/bin/python benchmarks/minilm_recovery.py --run unpruned l3 --core 1
    .venv/bin/python benchmarks/minilm_recovery.py --run l3-all l3-all-hidden l4-all --core 0
    .venv/bin/python benchmarks/minilm_recovery.py --run l3-all-e6 l5-all l6-f050-all \
        l3-all-lr1e-3 --core 1
    .venv/bin/python benchmarks/minilm_recovery.py --latency --rounds 2 --core 1  # quiet machine
    .venv/bin/python benchmarks/minilm_recovery.py --fusion unpruned l3-all --rounds 3 --core 1
    .venv/bin/python benchmarks/minilm_recovery.py --list
Results accumulate in benchmarks/results/minilm_recovery.json (one entry per experiment).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine, write_result  # noqa: E402

SPEC = ROOT / "examples/minilm-fidelity.yaml"
OUT = ROOT / "benchmarks/results/minilm_recovery.json"
WORK = Path(os.environ.get("MINILM_RECOVERY_WORK", "/tmp/minilm_recovery"))

_BASE = {"layers": 3, "heads": 12, "ffn": 1.0, "epochs": 3, "lr": 5e-4, "n_train": 1024,
         "batch_size": 32, "pooled_weight": 1.0, "hidden_weight": 0.0,
         "layer_choice": "importance",
         "precisions": ["fp32", "int8", "int8-pc"]}  # fmt: skip


def _exp(**changes: Any) -> dict[str, Any]:
    return {**_BASE, **changes}


#: name -> settings; every field of _BASE can change.
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "unpruned": _exp(layers=6, epochs=0, precisions=["fp32", "int8", "int8-pc", "int8-static",
                                                     "int8-static-pc"]),
    "l3": _exp(),
    "l3-all": _exp(n_train=None),
    "l3-all-hidden": _exp(n_train=None, hidden_weight=1.0),
    "l3-all-uniform": _exp(n_train=None, layer_choice="uniform"),
    "l3-all-e6": _exp(n_train=None, epochs=6),
    "l3-all-lr1e-3": _exp(n_train=None, lr=1e-3),
    "l2-all": _exp(layers=2, n_train=None),
    "l2-all-e6": _exp(layers=2, n_train=None, epochs=6),
    "l4-all": _exp(layers=4, n_train=None),
    "l5-all": _exp(layers=5, n_train=None),
    "l6-f050-all": _exp(layers=6, ffn=0.5, n_train=None),
    "l6-h6-all": _exp(layers=6, heads=6, n_train=None),
}


def _bundle(n_train: int | None, cache: dict[Any, Any]) -> Any:
    """What a search prepares (task, base model, importance, reference embeddings)."""
    from paretoforge.pipeline.prepare import prepare
    from paretoforge.spec import Spec

    if n_train not in cache:
        spec = Spec.from_file(SPEC)
        params = dict(spec.task.params)
        params.pop("n_train", None)
        if n_train is not None:
            params["n_train"] = n_train
        data = spec.model_dump(mode="json")
        data["task"]["params"] = params
        cache[n_train] = prepare(Spec.model_validate(data), log=lambda *a: None)
    return cache[n_train]


def _uniform_layers(n_layers: int, kept: int) -> tuple[int, ...]:
    """Every (n / kept)-th layer, ending at the last: 3 of 6 -> (1, 3, 5)."""
    return tuple(sorted({round((i + 1) * n_layers / kept) - 1 for i in range(kept)}))


def _score(p: Any, path: Path) -> float:
    """The task's quality of an ONNX file, as the pipeline's score stage gives it."""
    from paretoforge.pipeline.stages import BuildContext, score

    return score(BuildContext(p, recovery=None, seed=0), path)


def build_and_score(name: str, exp: dict[str, Any], cache: dict[Any, Any]) -> dict[str, Any]:
    import torch

    from paretoforge.kernels.export import export_onnx
    from paretoforge.kernels.quantize import apply_precision
    from paretoforge.models.distill import distill
    from paretoforge.models.importance import Importance
    from paretoforge.models.surgery import PrunePlan, plan_from_importance, prune
    from paretoforge.tasks.embedding import PooledEncoder, Pooling

    p = _bundle(exp["n_train"], cache)
    base = p.load_base()
    imp = Importance.from_dict(p.importance)
    plan = plan_from_importance(imp, layers_kept=exp["layers"], heads_kept=exp["heads"],
                                ffn_kept=exp["ffn"])  # fmt: skip
    if exp["layer_choice"] == "uniform":
        layers = _uniform_layers(p.num_layers, exp["layers"])
        full = plan_from_importance(imp, layers_kept=p.num_layers, heads_kept=exp["heads"],
                                    ffn_kept=exp["ffn"])  # fmt: skip
        plan = PrunePlan(layers=layers, heads=tuple(full.heads[i] for i in layers),
                         neurons=tuple(full.neurons[i] for i in layers))  # fmt: skip
    pooling = Pooling(**p.task_state["pooling"])
    t0 = time.perf_counter()
    model = prune(base, plan)
    if exp["epochs"] > 0:
        model = distill(model, base, p.task.x_train, None, epochs=exp["epochs"], lr=exp["lr"],
                        batch_size=exp["batch_size"], seed=0, hidden_weight=exp["hidden_weight"],
                        pooled_weight=exp["pooled_weight"], pooling=pooling)  # fmt: skip
    recovery_s = time.perf_counter() - t0
    WORK.mkdir(parents=True, exist_ok=True)
    train = p.feeds("train")
    fp32 = WORK / f"{name}.fp32-export.onnx"
    example = {k: torch.from_numpy(v[:1]) for k, v in train.items()}
    export_onnx(PooledEncoder(model, pooling), example, fp32, output_names=("sentence_embedding",))
    results = {}
    for prec in exp["precisions"]:
        kind = prec.removesuffix("-pc")
        dst = WORK / f"{name}.{prec}.onnx"
        cal = {k: v[:128] for k, v in train.items()} if kind == "int8-static" else None
        apply_precision(fp32, dst, kind, calibration=cal, per_channel=prec.endswith("-pc"))
        results[prec] = {"cosine": round(_score(p, dst), 4),
                         "onnx_mb": round(dst.stat().st_size / 2**20, 2)}
        print(f"  {name} {prec}: cosine {results[prec]['cosine']:.4f}", flush=True)
    return {"settings": exp, "plan_layers": list(plan.layers), "n_train": len(p.task.y_train),
            "recovery_s": round(recovery_s, 1), "precisions": results}


def _shape(exp: dict[str, Any]) -> str:
    """What latency depends on: the kept layers, heads and FFN fraction (not the recovery)."""
    return f"L{exp['layers']}-H{exp['heads']}-F{exp['ffn']}"


def measure_ratios(experiments: dict[str, Any], rounds: int, core: int) -> dict[str, Any]:
    """cpu-1t p50 of one built candidate per shape and precision, each right after the
    unpruned fp32 model; ``{shape.precision: {ratio, spread}}``."""
    import numpy as np

    from paretoforge.evaluators.latency import measure_latency
    from paretoforge.hw_profiles import get_profile

    p = _bundle(1024, {})
    profile = get_profile("cpu-1t")
    train = p.feeds("train")
    idx = np.random.default_rng(0).choice(len(p.task.y_train), size=64, replace=False)
    samples = {k: v[idx] for k, v in train.items()}
    base = WORK / "unpruned.fp32.onnx"
    files: dict[str, Path] = {}
    for name, e in experiments.items():
        for prec in e["precisions"]:
            f = WORK / f"{name.split('@')[0]}.{prec}.onnx"  # name@note: same files
            key = f"{_shape(e['settings'])}.{prec}"
            if f.is_file() and f != base and key not in files:
                files[key] = f
    ratios: dict[str, list[float]] = {k: [] for k in files}
    base_ms: list[float] = []
    for r in range(rounds):
        for key, f in files.items():
            b = measure_latency(base, profile, samples, cores=[core]).p50_ms
            c = measure_latency(f, profile, samples, cores=[core]).p50_ms
            base_ms.append(b)
            ratios[key].append(c / b)
        print(f"  round {r + 1}/{rounds} done (load {os.getloadavg()[0]:.1f})", flush=True)
    out: dict[str, Any] = {k: {"ratio": round(statistics.median(v), 3),
                               "spread": round(max(v) - min(v), 3)} for k, v in ratios.items()}
    out["_base_p50_ms"] = {"median": round(statistics.median(base_ms), 3),
                           "min": round(min(base_ms), 3), "max": round(max(base_ms), 3)}
    return out


def measure_fusion(names: list[str], rounds: int, core: int) -> dict[str, Any]:
    """ONNX Runtime's offline transformer fusions (attention, skip-LayerNorm, bias-GELU,
    embedding-LayerNorm: ``onnxruntime.transformers.optimizer``) before dynamic int8 (per
    channel): cosine and cpu-1t ratio to the unpruned fp32 model, fp32 and int8."""
    import numpy as np
    from onnxruntime.transformers import optimizer

    from paretoforge.evaluators.latency import measure_latency
    from paretoforge.hw_profiles import get_profile
    from paretoforge.kernels.quantize import quantize_dynamic_int8

    p = _bundle(1024, {})
    profile = get_profile("cpu-1t")
    idx = np.random.default_rng(0).choice(len(p.task.y_train), size=64, replace=False)
    samples = {k: v[idx] for k, v in p.feeds("train").items()}
    base = WORK / "unpruned.fp32.onnx"
    out: dict[str, Any] = {}
    for name in names:
        fused = WORK / f"{name}.fused-export.onnx"
        optimizer.optimize_model(str(WORK / f"{name}.fp32-export.onnx"), model_type="bert",
                                 num_heads=12, hidden_size=384).save_model_to_file(str(fused))
        int8 = quantize_dynamic_int8(fused, WORK / f"{name}.fused-int8.export.onnx",
                                     per_channel=True)  # fmt: skip
        for kind, f in (("fused-fp32", fused), ("fused-int8-pc", int8)):
            ratios = []
            for _ in range(rounds):
                b = measure_latency(base, profile, samples, cores=[core]).p50_ms
                ratios.append(measure_latency(f, profile, samples, cores=[core]).p50_ms / b)
            out[f"{name}.{kind}"] = {"cosine": round(_score(p, f), 4),
                                     "latency_ratio": round(statistics.median(ratios), 3)}
            print(f"  {name}.{kind}: {out[f'{name}.{kind}']}", flush=True)
    return out


def _load() -> dict[str, Any]:
    data = json.loads(OUT.read_text()) if OUT.is_file() else {}
    data.setdefault("experiments", {})
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", nargs="*", default=[], help="experiments to build and score")
    ap.add_argument("--latency", action="store_true", help="measure latency ratios")
    ap.add_argument("--fusion", nargs="*", default=[],
                    help="built experiments to re-measure with ORT's transformer fusions")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--core", type=int, default=0, help="the core to pin to")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for k, v in EXPERIMENTS.items():
            print(k, json.dumps(v))
        return 0
    import torch

    os.sched_setaffinity(0, [args.core])  # one core, as a search worker
    torch.set_num_threads(1)
    cache: dict[Any, Any] = {}
    for name in args.run:
        t0 = time.perf_counter()
        result = build_and_score(name, EXPERIMENTS[name], cache)
        print(f"{name}: {time.perf_counter() - t0:.0f}s", flush=True)
        data = _load()  # re-read: another process may have added its experiments meanwhile
        data["experiments"][name] = result
        write_result(OUT, data)
    data = _load()
    if args.latency:
        load_start = os.getloadavg()[0]
        lat = measure_ratios(data["experiments"], args.rounds, args.core)
        data["latency"] = {"profile": "cpu-1t", "seq_len": 128, "batch": 1, "rounds": args.rounds,
                           "loadavg_start": load_start, "loadavg_end": os.getloadavg()[0],
                           "ratios": lat}
        for e in data["experiments"].values():
            for prec, r in e["precisions"].items():
                r["latency_ratio"] = lat.get(f"{_shape(e['settings'])}.{prec}", {}).get("ratio")
    if args.fusion:
        data["fusion"] = measure_fusion(args.fusion, args.rounds, args.core)
    data["machine"] = machine("torch", "onnxruntime", "transformers")
    write_result(OUT, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
