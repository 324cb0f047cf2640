"""Result quality against what users would reach for instead, on the quickstart task (cpu-1t).

In one process, on one pinned core, with the same latency protocol for every row:

  (a) the base model in PyTorch eager fp32 (batch 1, one thread);
  (b) the base model exported to ONNX, optimised by onnxruntime's transformer optimizer
      (fusions: which applied is recorded) and dynamically quantized to int8 -- what a user of
      Optimum / onnxruntime tooling gets;
  (c) uniform layer dropping to half depth (every other layer, the DistilBERT recipe) with the
      same distillation budget as the search's candidates, fp32 ONNX;
  (d) paretoforge's fastest front member within 1 accuracy point of the base, from a finished
      quickstart run (re-measured here, not copied from the run).

Usage:
    .venv/bin/python benchmarks/baselines_quickstart.py --run runs/quickstart \
        [--out benchmarks/results/baselines_quickstart.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def torch_eager_p50(model, x: np.ndarray, *, warmup: int = 50, runs: int = 500) -> dict:
    import torch

    torch.set_num_threads(1)
    xs = [torch.from_numpy(x[i : i + 1]) for i in range(len(x))]
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup):
            model(pixel_values=xs[i % len(xs)])
        for i in range(runs):
            t0 = time.perf_counter_ns()
            model(pixel_values=xs[i % len(xs)])
            times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(0.9 * len(times))],
            "runs": runs}


def ort_row(path: Path, x_lat: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
            core: list[int]) -> dict:
    from paretoforge.evaluators.latency import measure_latency
    from paretoforge.evaluators.quality import onnx_accuracy
    from paretoforge.hw_profiles import get_profile

    m = measure_latency(path, get_profile("cpu-1t"), {"pixel_values": x_lat}, cores=core,
                        min_runs=200)
    return {"accuracy": onnx_accuracy(path, x_eval, y_eval), "p50_ms": m.p50_ms,
            "p90_ms": m.p90_ms, "ci95_rel": m.ci95_rel, "runs": m.runs,
            "onnx_bytes": path.stat().st_size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished quickstart run directory")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/baselines_quickstart.json"))
    args = ap.parse_args()

    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    import paretoforge
    from paretoforge.evaluators.quality import torch_accuracy
    from paretoforge.kernels.export import export_onnx
    from paretoforge.models.distill import distill
    from paretoforge.models.io import load_pretrained
    from paretoforge.models.surgery import PrunePlan, identity_plan, prune

    torch.set_num_threads(1)
    core = [sorted(os.sched_getaffinity(0))[-1]]
    os.sched_setaffinity(0, core)
    run = paretoforge.load_run(args.run)
    spec = run.spec
    base_trial = run.base_trial()
    base_dir = run.artifact_dir(base_trial)
    base = load_pretrained(base_dir)
    from paretoforge.tasks import load_task

    task = load_task(spec.task.name, heldout_fraction=spec.task.split.heldout_fraction,
                     seed=spec.task.split.seed)
    rng = np.random.default_rng(0)
    x_lat = task.x_train[rng.choice(len(task.x_train), 64, replace=False)]
    work = Path(tempfile.mkdtemp(prefix="pf-baselines-"))
    rows: dict[str, dict] = {}

    # (a) PyTorch eager fp32
    rows["a_torch_eager_fp32"] = {"accuracy": torch_accuracy(base, task.x_heldout,
                                                             task.y_heldout),
                                  **torch_eager_p50(base, x_lat)}

    # (b) ONNX + transformer fusions + dynamic int8
    fp32 = work / "base_fp32.onnx"
    export_onnx(base, {"pixel_values": torch.from_numpy(task.x_train[:1])}, fp32)
    cfg = base.config
    opt = optimize_model(str(fp32), model_type="vit", num_heads=cfg.num_attention_heads,
                         hidden_size=cfg.hidden_size)
    fused = opt.get_fused_operator_statistics()
    opt_path = work / "base_opt.onnx"
    opt.save_model_to_file(str(opt_path))
    int8 = work / "base_opt_int8.onnx"
    quantize_dynamic(str(opt_path), str(int8), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    rows["b_onnx_fused_int8"] = {**ort_row(int8, x_lat, task.x_heldout, task.y_heldout, core),
                                 "fusions_applied": {k: v for k, v in fused.items() if v}}
    rows["b0_onnx_fp32_plain"] = ort_row(fp32, x_lat, task.x_heldout, task.y_heldout, core)

    # (c) uniform layer dropping to half depth + the same distillation budget
    full = identity_plan(base)
    keep = tuple(range(0, len(full.layers), 2))
    plan = PrunePlan(layers=keep, heads=tuple(full.heads[i] for i in keep),
                     neurons=tuple(full.neurons[i] for i in keep))
    student = prune(base, plan)
    r = spec.recovery
    t0 = time.perf_counter()
    student = distill(student, base, task.x_train, task.y_train, epochs=r.epochs, lr=r.lr,
                      temperature=r.temperature, alpha=r.alpha, batch_size=r.batch_size,
                      seed=spec.search.seed)
    half = work / "half_depth.onnx"
    export_onnx(student, {"pixel_values": torch.from_numpy(task.x_train[:1])}, half)
    rows["c_half_depth_kd_fp32"] = {**ort_row(half, x_lat, task.x_heldout, task.y_heldout,
                                              core),
                                    "layers_kept": list(keep),
                                    "distill_s": round(time.perf_counter() - t0, 1)}

    # (d) paretoforge's fastest front member within 1 point of the base
    base_acc = base_trial.user_attrs["metrics"]["accuracy"]
    lat = "latency_p50_ms@cpu-1t"
    ok = [m for m in run.front() if m.metrics["accuracy"] >= base_acc - 0.01]
    best = min(ok, key=lambda m: m.metrics[lat])
    rows["d_paretoforge_front"] = {
        **ort_row(Path(best.artifacts["model.onnx"]), x_lat, task.x_heldout, task.y_heldout,
                  core),
        "trial": best.trial, "config": best.config, "in_search_p50_ms": best.metrics[lat]}

    a = rows["a_torch_eager_fp32"]["p50_ms"]
    b = rows["b_onnx_fused_int8"]["p50_ms"]
    for row in rows.values():
        row["speedup_vs_a"] = a / row["p50_ms"]
        row["speedup_vs_b"] = b / row["p50_ms"]
        row["accuracy_delta_vs_base"] = row["accuracy"] - base_acc
    result = {"command": f"benchmarks/baselines_quickstart.py --run {args.run}",
              "profile": "cpu-1t (one pinned core, batch 1)", "base_accuracy": base_acc,
              "loadavg": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
