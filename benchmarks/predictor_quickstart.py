"""Latency predictor on the quickstart space: measure configs on cpu-1t, fit on 60%, test on 40%.

Every config of the ``vit-prune`` preset (4 x 4 x 4 x 2 = 128) is built from the quickstart
base model (importance-ranked surgery, ONNX export, precision; no distillation: weights do not
change timing), measured on ``cpu-1t`` with the worker's protocol on one pinned core, and
described by :func:`paretoforge.evaluators.predictor.features_from`. The predictor is fitted on
a random 60% and scored on the other 40% (MAPE, share within +-10%); the same is repeated over
many random splits to show how much the score depends on the split.

The load average is recorded around every measurement: numbers taken while other work ran on
the machine are marked so.

Usage:
    python benchmarks/predictor_quickstart.py                  # measure (~8 min) + fit
    python benchmarks/predictor_quickstart.py --n 64           # a random 64 of the 128
    python benchmarks/predictor_quickstart.py --fit-only       # refit the saved measurements
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretoforge.evaluators.predictor import FEATURES, LatencyPredictor, features_from

OUT = Path(__file__).resolve().parent / "results" / "predictor_quickstart.json"


def cpu_model() -> str:
    from paretoforge._sysinfo import cpu_model as _cpu_model

    return _cpu_model()


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("onnxruntime", "torch", "onnx", "scikit-learn", "numpy"):
        out[pkg] = metadata.version(pkg)
    return out


def measure_all(n: int | None, seed: int, core: int) -> list[dict[str, Any]]:
    import torch

    from paretoforge.evaluators.latency import measure_latency
    from paretoforge.hw_profiles import get_profile
    from paretoforge.kernels.export import export_onnx
    from paretoforge.kernels.ort import graph_summary
    from paretoforge.kernels.quantize import apply_precision
    from paretoforge.kernels.runtime import placement_report
    from paretoforge.models.importance import compute_importance
    from paretoforge.models.surgery import plan_from_importance, prune
    from paretoforge.models.vit import DEFAULT_DIGITS_RECIPE, get_base_model
    from paretoforge.pipeline.prepare import cache_dir
    from paretoforge.search_spaces import SearchSpace
    from paretoforge.tasks import load_task

    torch.set_num_threads(1)
    task = load_task("digits")
    base, info = get_base_model(DEFAULT_DIGITS_RECIPE, task, cache_dir() / "base")
    print(f"base model: cached={info.get('cached')}", file=sys.stderr)
    torch.manual_seed(0)
    imp = compute_importance(base, task.x_train, task.y_train)
    space = SearchSpace.from_preset("vit-prune")
    names = list(space.dimensions)
    configs = [dict(zip(names, v, strict=True)) for v in itertools.product(
        *space.dimensions.values())]
    order = np.random.default_rng(seed).permutation(len(configs))
    configs = [configs[i] for i in order[: n or len(configs)]]
    profile = get_profile("cpu-1t")
    samples = task.x_train[np.random.default_rng(0).choice(len(task.x_train), 64, replace=False)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pf-pred-") as d:
        for i, cfg in enumerate(configs):
            plan = plan_from_importance(imp, layers_kept=cfg["layers_kept"],
                                        heads_kept=cfg["heads_kept"], ffn_kept=cfg["ffn_kept"])
            model = prune(base, plan)
            fp32 = export_onnx(model, {task.input_name: torch.from_numpy(task.x_train[:1])},
                               Path(d) / "fp32.onnx", output_names=("logits",))
            path = apply_precision(fp32, Path(d) / "model.onnx", cfg["precision"])
            load_before = os.getloadavg()[0]
            m = measure_latency(path, profile, {task.input_name: samples}, cores=[core])
            load_after = os.getloadavg()[0]
            placement = placement_report(path, profile, {task.input_name: samples},
                                         n_cores=1)
            row = {
                "config": cfg,
                "plan": {"layers": list(plan.layers), "heads": [list(h) for h in plan.heads],
                         "neurons_per_layer": [len(x) for x in plan.neurons]},
                "graph": graph_summary(path),
                "placement": {profile.name: {k: placement[k] for k in (
                    "nodes_after", "nodes_by_provider", "unfused_qdq",
                    "dynamic_quantize_nodes")}},
                "p50_ms": m.p50_ms,
                "p90_ms": m.p90_ms,
                "ci95_rel": m.ci95_rel,
                "runs": m.runs,
                "converged": m.converged,
                "loadavg_1m": [load_before, load_after],
            }
            rows.append(row)
            print(f"[{i + 1}/{len(configs)}] {cfg} p50={m.p50_ms:.4f} ms ci={m.ci95_rel:.3f} "
                  f"load={load_before:.2f}", file=sys.stderr)
    return rows


def fit_report(rows: list[dict[str, Any]], seed: int, splits: int) -> dict[str, Any]:
    feats = [features_from(r, r["config"], profile="cpu-1t") for r in rows]
    lat = np.array([r["p50_ms"] for r in rows])
    n = len(rows)
    n_train = round(0.6 * n)

    def one(split_seed: int, features: tuple[str, ...] = FEATURES) -> tuple[dict, Any]:
        perm = np.random.default_rng(split_seed).permutation(n)
        train, test = perm[:n_train], perm[n_train:]
        p = LatencyPredictor("cpu-1t", features=features).fit(
            [feats[i] for i in train], lat[train].tolist())
        return p.error_report([(feats[i], float(lat[i])) for i in test]), p

    main, predictor = one(seed)
    repeated = [one(seed + 1 + k)[0] for k in range(splits)]
    macs_only = [one(seed + 1 + k, ("macs_fp32", "macs_int8"))[0] for k in range(splits)]

    def summary(reports: list[dict]) -> dict[str, float]:
        mape = np.array([r["mape"] for r in reports])
        within = np.array([r["within_10pct"] for r in reports])
        return {"splits": len(reports), "mape_mean": float(mape.mean()),
                "mape_p10": float(np.percentile(mape, 10)),
                "mape_p90": float(np.percentile(mape, 90)),
                "within_10pct_mean": float(within.mean())}

    return {
        "n_configs": n,
        "n_train": n_train,
        "n_test": n - n_train,
        "split_seed": seed,
        "held_out": main,
        "coefficients": {"intercept_ms": predictor.intercept_, **predictor.coef_},
        "repeated_splits": summary(repeated),
        "baseline_macs_only_repeated": summary(macs_only),
        "p50_range_ms": [float(lat.min()), float(lat.max())],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="configs to measure (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", type=int, default=50, help="random splits for the spread")
    ap.add_argument("--core", type=int, default=None, help="core to measure on (default: last)")
    ap.add_argument("--fit-only", action="store_true", help="refit the saved measurements")
    args = ap.parse_args()

    if args.fit_only:
        saved = json.loads(OUT.read_text())
        rows, meta = saved["rows"], saved["meta"]
    else:
        core = args.core if args.core is not None else max(os.sched_getaffinity(0))
        t0 = time.time()
        load0 = os.getloadavg()
        rows = measure_all(args.n, args.seed, core)
        loads = [x for r in rows for x in r["loadavg_1m"]]
        meta = {
            "cpu_model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "core": core,
            "profile": "cpu-1t",
            "protocol": "measure_latency defaults (warmup 20, 50..2000 runs, 3 s, CI 2%)",
            "versions": versions(),
            "wall_s": round(time.time() - t0, 1),
            "loadavg_at_start": list(load0),
            "loadavg_1m_during": {"min": min(loads), "max": max(loads),
                                  "mean": float(np.mean(loads))},
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    report = {"meta": meta, "fit": fit_report(rows, args.seed, args.splits), "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    print(json.dumps({"meta": meta, "fit": report["fit"]}, indent=1))


if __name__ == "__main__":
    main()
