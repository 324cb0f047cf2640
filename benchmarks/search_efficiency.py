"""Search efficiency as a tabular benchmark: evaluate a small quickstart space exhaustively once,
then replay samplers against the stored table at no evaluation cost.

Step 1 (``--build``, minutes): every configuration of the space below goes through the real
search (Ray workers, surgery, distillation, ONNX, cpu-1t measurement), enqueued as seed configs,
and the table is stored in ``benchmarks/data/quickstart_exhaustive.json``.

Step 2 (default, seconds to minutes): for each sampler (nsga2, tpe, gp, random) and seed
0..4, an in-memory Optuna study asks, the table answers (base model enqueued first, as in a
real search); the hypervolume of the evaluated points after 10 / 25 / 50 / 100 evaluations is
reported as a ratio to the exhaustive front's hypervolume, with a fixed reference point: the
worst accuracy and the worst cpu-1t p50 in the table.

Usage:
    .venv/bin/python benchmarks/search_efficiency.py --build   # once (writes the data file)
    .venv/bin/python benchmarks/search_efficiency.py           # replay -> results JSON + table
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from paretoforge.names import TrialAttr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks/data/quickstart_exhaustive.json"
OUT = ROOT / "benchmarks/results/search_efficiency.json"
DIMENSIONS = {"layers_kept": [1, 2, 3, 4], "heads_kept": [1, 2, 4],
              "ffn_kept": [0.25, 0.5, 1.0], "precision": ["fp32", "int8"]}
OBJECTIVES = [("accuracy", "maximize"), ("latency_p50_ms@cpu-1t", "minimize")]
BUDGETS = (10, 25, 50, 100)
SAMPLERS = ("nsga2", "tpe", "gp", "random")
SEEDS = range(5)


def build() -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.orchestrator.results import load_run
    from paretoforge.spec import Spec

    spec = Spec.from_file(ROOT / "examples/quickstart.yaml")
    configs = [dict(zip(DIMENSIONS, values, strict=True))
               for values in itertools.product(*DIMENSIONS.values())]
    data = spec.model_dump(mode="json")
    data["name"] = "exhaustive"
    data["profiles"] = ["cpu-1t"]
    data["space"]["dimensions"] = DIMENSIONS
    data["search"].update(sampler="random", trials=len(configs) + 1, seed_configs=configs)
    spec = Spec.from_dict(data)
    run_dir = Path(tempfile.mkdtemp(prefix="pf-exhaustive-"))
    t0 = time.perf_counter()
    run_search(spec, run_dir, progress=Progress(spec.search.trials, live=False))
    wall = time.perf_counter() - t0
    run = load_run(run_dir)
    table = {}
    for t in run.trials():
        cfg = t.user_attrs[TrialAttr.CONFIG]
        key = json.dumps(cfg, sort_keys=True)
        metrics = t.user_attrs[TrialAttr.METRICS]
        table[key] = {"config": cfg, **{m: metrics[m] for m, _ in OBJECTIVES}}
    missing = [c for c in configs if json.dumps(c, sort_keys=True) not in table]
    if missing:
        raise SystemExit(f"{len(missing)} configs were not evaluated: {missing[:3]}")
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps({
        "dimensions": DIMENSIONS, "objectives": OBJECTIVES, "build_wall_s": round(wall, 1),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "spec": spec.model_dump(mode="json"), "rows": sorted(table.values(),
                                                             key=lambda r: json.dumps(r["config"]))
    }, indent=1) + "\n")
    print(f"wrote {DATA}: {len(table)} configs in {wall:.0f}s")


def replay() -> dict:
    import optuna

    from paretoforge.orchestrator.hypervolume import hypervolume, worst_point
    from paretoforge.orchestrator.results import non_dominated
    from paretoforge.samplers import make_sampler
    from paretoforge.search_spaces import SearchSpace
    from paretoforge.spec import SearchConfig

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = json.loads(DATA.read_text())
    rows = data["rows"]
    dirs = [d for _, d in OBJECTIVES]
    table = {json.dumps(r["config"], sort_keys=True): tuple(r[m] for m, _ in OBJECTIVES)
             for r in rows}
    points = list(table.values())
    ref = worst_point(points, dirs)
    front = [points[i] for i in non_dominated(points, dirs)]
    hv_max = hypervolume(front, dirs, ref)
    space = SearchSpace({k: tuple(v) for k, v in data["dimensions"].items()})
    base = space.base_params(4, 4)
    result: dict = {"reference_point": dict(zip([m for m, _ in OBJECTIVES], ref, strict=True)),
                    "exhaustive_front_size": len(front), "exhaustive_hypervolume": hv_max,
                    "configs": len(rows), "samplers": {}}
    for name in SAMPLERS:
        per_budget: dict[int, list[float]] = {b: [] for b in BUDGETS}
        t0 = time.perf_counter()
        for seed in SEEDS:
            sampler = make_sampler(SearchConfig(sampler=name, seed=seed, trials=max(BUDGETS)))
            study = optuna.create_study(directions=dirs, sampler=sampler)
            study.enqueue_trial(base)
            seen: list[tuple[float, ...]] = []
            for i in range(1, max(BUDGETS) + 1):
                trial = study.ask()
                cfg = space.suggest(trial)
                values = table[json.dumps(cfg.model_dump(mode="json"), sort_keys=True)]
                study.tell(trial, list(values))
                seen.append(values)
                if i in per_budget:
                    per_budget[i].append(hypervolume(seen, dirs, ref) / hv_max)
        result["samplers"][name] = {
            str(b): {"mean": statistics.mean(v), "std": statistics.pstdev(v), "n_seeds": len(v)}
            for b, v in per_budget.items()}
        result["samplers"][name]["replay_s"] = round(time.perf_counter() - t0, 1)
        print(name, {b: round(statistics.mean(v), 3) for b, v in per_budget.items()}, flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="store_true", help="evaluate the space exhaustively first")
    args = ap.parse_args()
    if args.build or not DATA.is_file():
        build()
    result = replay()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| sampler | " + " | ".join(f"HV ratio @{b}" for b in BUDGETS) + " |")
    print("|---|" + "---|" * len(BUDGETS))
    for name, r in result["samplers"].items():
        cells = [f"{r[str(b)]['mean']:.3f} ± {r[str(b)]['std']:.3f}" for b in BUDGETS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
