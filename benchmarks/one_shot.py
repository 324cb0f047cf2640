"""One-shot against per-candidate search on the quickstart, at the same wall-clock budget.

1. ``paretoforge search examples/quickstart.yaml`` (one-shot, the default) from a cold cache:
   base training, supernet training, the one-shot trials and the finishing rungs, timed as a
   whole, beside the base training time the same run printed (issue 11: whole wall time
   <= 2.5x base training, >= 200 sub-networks evaluated).
2. The same task searched per candidate (the previous quickstart: ``vit-prune``, every
   pruned candidate distilled for 10 epochs, sampler gp), base model from the cache the first
   run filled, given the first run's wall time minus its base training as ``timeout_s``.
3. Both fronts on quality no search decision saw -- the test split, scored once per front
   member after each search -- against latency relative to the run's own base trial (each run
   measures its base, so a drift of the machine between the runs cancels): hypervolume with
   the reference point (test accuracy 0.5, latency ratio 1.1), and their ratio.

Usage:
    .venv/bin/python benchmarks/one_shot.py [--out benchmarks/results/one_shot.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAT = "latency_p50_ms@cpu-1t"
REF = (0.5, 1.1)  # (test accuracy, latency / the run's base latency)


def _search(spec_path: Path, run_dir: Path, env: dict[str, str]) -> tuple[float, str]:
    exe = Path(sys.executable).parent / "paretoforge"
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "search", str(spec_path), "--run-dir", str(run_dir),
                           "--quiet"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"search {spec_path} failed:\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return wall, proc.stdout


def _front(run_dir: Path) -> dict:
    from paretoforge.names import Phase, TrialAttr
    from paretoforge.orchestrator.hypervolume import hypervolume
    from paretoforge.orchestrator.results import load_run

    run = load_run(run_dir)
    base = run.base_trial()
    base_lat = base.user_attrs[TrialAttr.METRICS][LAT]
    members = []
    for m in run.front():
        test = m.test_metrics.get("accuracy")
        members.append({"trial": m.trial, "config": m.config, "phase": m.phase,
                        "validation_accuracy": m.metrics["accuracy"], "test_accuracy": test,
                        LAT: m.metrics[LAT], "latency_ratio": m.metrics[LAT] / base_lat,
                        "one_shot": m.one_shot})
    points = [(x["test_accuracy"], x["latency_ratio"]) for x in members
              if x["test_accuracy"] is not None]
    trials = run.trials()
    built = [t for t in trials if TrialAttr.CACHED_FROM not in t.user_attrs]
    return {
        "front": members,
        "hypervolume_test": hypervolume(points, ["maximize", "minimize"], REF),
        "trials_completed": len(trials),
        "candidates_built": len(built),
        "one_shot_subnetworks": sum(t.user_attrs.get(TrialAttr.PHASE) == Phase.ONE_SHOT
                                    for t in built),
        "finishing_trials": sum(t.user_attrs.get(TrialAttr.PHASE) == Phase.FINISH
                                for t in trials),
        "base": {"test_accuracy": run.test_metrics().get(base.number, {}).get("accuracy"),
                 "validation_accuracy": base.user_attrs[TrialAttr.METRICS]["accuracy"],
                 LAT: base_lat},
        "prepare_timings": run.info.get("prepare_timings", {}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/one_shot.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pf-oneshot-"))
    env = dict(os.environ, PARETOFORGE_CACHE=str(work / "cache"))
    load_before = os.getloadavg()

    # 1. one-shot, cold cache
    wall_os, out_os = _search(ROOT / "examples/quickstart.yaml", work / "one-shot", env)
    info = json.loads((work / "one-shot" / "run.json").read_text())
    base_s = float(info["prepare_timings"]["base_s"])
    one_shot = _front(work / "one-shot")

    # 2. per-candidate, same search budget, base from the cache
    spec = yaml.safe_load((ROOT / "examples/quickstart.yaml").read_text())
    spec["space"] = {"preset": "vit-prune", "dimensions": spec["space"]["dimensions"]}
    spec["recovery"] = {"epochs": 10, "lr": 0.002, "temperature": 2.0, "alpha": 0.7}
    spec.pop("one_shot", None)
    budget = max(60.0, wall_os - base_s)
    spec["search"] = {"strategy": "per-candidate", "sampler": "gp", "trials": 10_000,
                      "timeout_s": budget, "seed": 0, "population_size": 8}
    spec_path = work / "per-candidate.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    wall_pc, _ = _search(spec_path, work / "per-candidate", env)
    per_candidate = _front(work / "per-candidate")

    hv_os, hv_pc = one_shot["hypervolume_test"], per_candidate["hypervolume_test"]
    result = {
        "command": ".venv/bin/python benchmarks/one_shot.py",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "reference_point": {"test_accuracy": REF[0], "latency_ratio_to_base": REF[1]},
        "one_shot": {"wall_s": round(wall_os, 1), "base_training_s": round(base_s, 1),
                     "wall_over_base_training": round(wall_os / base_s, 2),
                     "supernet_s": one_shot["prepare_timings"].get("supernet_s"), **one_shot},
        "per_candidate": {"wall_s": round(wall_pc, 1), "timeout_s": round(budget, 1),
                          **per_candidate},
        "hypervolume_ratio_one_shot_over_per_candidate":
            round(hv_os / hv_pc, 4) if hv_pc else None,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine("torch", "onnxruntime", "ray", "optuna"),
        "run_dirs": str(work),
    }
    write_result(Path(args.out), result)
    print(json.dumps({k: result[k] for k in ("hypervolume_ratio_one_shot_over_per_candidate",
                                             "loadavg_before")}, indent=2))
    print(json.dumps({k: result["one_shot"][k] for k in (
        "wall_s", "base_training_s", "wall_over_base_training", "one_shot_subnetworks",
        "hypervolume_test")}, indent=2))
    print(json.dumps({k: result["per_candidate"][k] for k in (
        "wall_s", "candidates_built", "hypervolume_test")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
