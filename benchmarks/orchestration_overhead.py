"""Orchestration overhead: what the driver, Ray and the study storage cost per trial.

Two measurements, both with the real driver (``run_search``), a real local Ray cluster, the
real Optuna study in its journal file, and a stand-in worker
(:class:`paretoforge.testing.FakeWorker`) in place of model builds:

* ``overhead``: the worker returns at once, so the loop's wall time is all orchestration:
  ask + suggest, the Ray call and its result, the user attributes and tell, the progress
  bookkeeping (front, hypervolume). Reported as milliseconds per trial (target <= 10) from the
  first worker's start-up to the end (the one-off start-up is reported apart), with the loop's
  own breakdown (``wait``: in ray.wait, i.e. the Ray round trip). Run for each sampler given
  with ``--samplers``.
* ``utilisation``: every trial sleeps ``--sleep-s`` seconds (>= 1) on 2 workers; utilisation is
  the workers' busy time over 2 x the wall time from the first trial's start to the last one's
  end (target >= 90%), and over the whole loop (worker start-up included) for reference.

The search space is the tiny test model's with 200 FFN-width choices, so that few trials are
answered from the cache (they are counted separately: a cached trial never reaches a worker).
The base model of that tiny spec is trained once (cached under $PARETOFORGE_CACHE).

Usage:
    python benchmarks/orchestration_overhead.py
    python benchmarks/orchestration_overhead.py --trials 300 --samplers nsga2 random \\
        --sleep-trials 24 --sleep-s 1.0 --wait-quiet 600
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, wait_quiet  # noqa: E402

from paretoforge.names import TrialAttr  # noqa: E402
from paretoforge.testing import tiny_spec_dict  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "orchestration_overhead.json"

# the tests' tiny spec with 200 FFN widths (its base model, cached, is the tests' too)
SPEC: dict[str, Any] = tiny_spec_dict({"trials": 100, "population_size": 16}, name="overhead")
SPEC["space"]["dimensions"]["ffn_kept"] = [round(0.005 * i, 3) for i in range(1, 201)]


def _spec(**search: Any) -> Any:
    from paretoforge.spec import Spec

    d = json.loads(json.dumps(SPEC))
    d["search"].update(search)
    return Spec.from_dict(d)


def _search(spec: Any, run_dir: Path, **worker_kwargs: Any) -> Any:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.testing import FakeWorker

    return run_search(spec, run_dir, progress=Progress(spec.search.trials, quiet=True),
                      worker_cls=FakeWorker, worker_kwargs=worker_kwargs)


def overhead(trials: int, sampler: str, root: Path) -> dict[str, Any]:
    summary = _search(_spec(trials=trials, sampler=sampler), root / f"overhead-{sampler}")
    st = summary.stats
    n = summary.completed
    steady = st["wall_s"] - (st["first_ready_s"] or 0.0)  # the workers' start-up is not per trial
    return {
        "sampler": sampler,
        "trials": n,
        "cached": summary.cached,
        "to_workers": n - summary.cached,
        "loop_wall_s": round(st["wall_s"], 3),
        "worker_startup_s": round(st["first_ready_s"] or 0.0, 3),
        "ms_per_trial": round(1e3 * steady / n, 2),
        "ms_per_worker_trial": round(1e3 * steady / max(1, n - summary.cached), 2),
        "ms_per_trial_incl_startup": round(1e3 * st["wall_s"] / n, 2),
        "breakdown_ms_per_trial": {
            k: round(1e3 * st[f"{k}_s"] / n, 3) for k in ("ask", "tell", "submit", "wait")
        },
    }


def utilisation(trials: int, sleep_s: float, root: Path) -> dict[str, Any]:
    from paretoforge.orchestrator.results import load_run

    run_dir = root / "utilisation"
    summary = _search(_spec(trials=trials, sampler="nsga2"), run_dir, sleep_s=sleep_s)
    done = [t for t in load_run(run_dir).trials() if TrialAttr.CACHED_FROM not in t.user_attrs]
    busy = sum(t.user_attrs[TrialAttr.TIMINGS]["total_s"] for t in done)
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    window = (end - start).total_seconds()
    workers = 2
    return {
        "trials": summary.completed,
        "cached": summary.cached,
        "sleep_s": sleep_s,
        "workers": workers,
        "busy_s": round(busy, 3),
        "window_s": round(window, 3),
        "loop_wall_s": round(summary.stats["wall_s"], 3),
        "utilisation": round(busy / (workers * window), 4),
        "utilisation_incl_startup": round(busy / (workers * summary.stats["wall_s"]), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300, help="trials of the overhead run")
    ap.add_argument("--samplers", nargs="+", default=["nsga2", "random"])
    ap.add_argument("--sleep-trials", type=int, default=24)
    ap.add_argument("--sleep-s", type=float, default=1.0)
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="wait up to this many seconds for the 1-minute load average < 0.5")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    load_before = wait_quiet(args.wait_quiet, 0.5)

    from paretoforge.testing import local_ray

    results: dict[str, Any] = {"machine": machine("ray", "optuna"),
                               "load_avg_1m_before": round(load_before, 2)}
    with local_ray(num_cpus=2), tempfile.TemporaryDirectory(prefix="pf-bench-") as d:
        root = Path(d)
        _search(_spec(trials=2), root / "warmup")  # base model, imports, worker processes
        results["overhead"] = [overhead(args.trials, s, root) for s in args.samplers]
        results["utilisation"] = utilisation(args.sleep_trials, args.sleep_s, root)
    results["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
