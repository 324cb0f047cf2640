"""Scaling: completed trials per hour with 1 and 2 workers, and the driver's capacity at 64.

Two measurements, both with the real driver (``run_search``), real Ray and the real Optuna
journal:

* ``real``: the quickstart search (``examples/quickstart.yaml``: the ViT on digits, real
  surgery, distillation, ONNX export, int8, held-out accuracy, ``cpu-1t`` latency) run for
  ``--trials`` completed trials with ``cluster.workers`` = 1, then 2, each in a fresh run
  directory (no cross-run cache) on a local Ray cluster of that many CPUs. The base model is
  trained once beforehand (cached), so neither run pays for it. Throughput is completed trials
  per hour over the loop's wall time after the first worker is up, and over the whole loop
  (worker start-up included) for reference; cached trials (a repeated config) are counted
  apart and excluded from both.
* ``simulated``: a ``ray.cluster_utils.Cluster`` of ``--nodes`` nodes with ``--sim-workers``
  logical CPUs in all (default 4 x 16 = 64; a CPU is a logical resource to Ray, so the 64 worker
  processes share this machine's cores), one
  :class:`~paretoforge.testing.FakeWorker` per CPU that sleeps ``--sleep-s`` per
  trial instead of building. With ``W`` workers and ``S`` seconds per trial the ideal
  throughput is ``W / S``; the achieved one over the steady window (first trial started to
  last trial ended) says whether the driver keeps 64 workers busy. The driver's own time per
  trial (ask, tell, submit, and its share of the loop outside ``ray.wait``) is reported too:
  ``1 / driver_ms`` is the trial rate at which the driver itself would saturate.

Usage:
    python benchmarks/scaling.py                         # both parts (~10 min on 2 cores)
    python benchmarks/scaling.py --parts simulated --sim-workers 64 --sleep-s 5
    python benchmarks/scaling.py --parts real --trials 24 --wait-quiet 600

Results go to ``benchmarks/results/scaling.json``.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine, wait_quiet, write_result  # noqa: E402

from paretoforge.names import TrialAttr  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "scaling.json"


def _quickstart_spec(trials: int, workers: int, profiles: list[str] | None) -> Any:
    from paretoforge.spec import Spec

    spec = Spec.from_file(ROOT / "examples" / "quickstart.yaml")
    d = spec.model_dump(mode="json")
    if profiles:
        d["profiles"] = profiles
    d["search"]["trials"] = trials
    d["search"]["timeout_s"] = None
    d["cluster"]["workers"] = workers
    d["run_dir"] = None
    return Spec.from_dict(d)


def _window(run_dir: Path) -> tuple[list[Any], float, float]:
    """Trials that reached a worker, their summed busy time and the steady window's length."""
    from paretoforge.orchestrator.results import load_run

    done = [t for t in load_run(run_dir).trials()
            if t.state.name == "COMPLETE" and TrialAttr.CACHED_FROM not in t.user_attrs]
    busy = sum(float(t.user_attrs.get(TrialAttr.TIMINGS, {}).get("total_s", 0.0)) for t in done)
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    return done, busy, (end - start).total_seconds()


def real_part(trials: int, worker_counts: list[int], root: Path,
              profiles: list[str] | None = None) -> list[dict[str, Any]]:
    """The quickstart search with each worker count; one local Ray cluster per count."""
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.testing import local_ray

    rows = []
    for workers in worker_counts:
        spec = _quickstart_spec(trials, workers, profiles)
        with local_ray(num_cpus=workers, object_store_mb=256):
            run_dir = root / f"real-w{workers}-{'-'.join(spec.profiles)}"
            load0 = os.getloadavg()[0]
            summary = run_search(spec, run_dir, progress=Progress(trials, quiet=True))
            load1 = os.getloadavg()[0]
        st = summary.stats
        done, busy, window = _window(run_dir)
        steady = st["wall_s"] - (st["first_ready_s"] or 0.0)
        n = len(done)
        rows.append({
            "workers": workers,
            "profiles": spec.profiles,
            "completed": summary.completed,
            "cached": summary.cached,
            "built": n,
            "failed": summary.failed,
            "loop_wall_s": round(st["wall_s"], 2),
            "worker_startup_s": round(st["first_ready_s"] or 0.0, 2),
            "trials_per_hour": round(3600 * n / steady, 1),
            "trials_per_hour_incl_startup": round(3600 * n / st["wall_s"], 1),
            "mean_trial_s": round(busy / max(1, n), 3),
            "utilisation": round(busy / (workers * window), 4) if window > 0 else None,
            "loadavg_1m": [round(load0, 2), round(load1, 2)],
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def simulated_part(nodes: int, workers: int, trials: int, sleep_s: float,
                   root: Path) -> dict[str, Any]:
    """The driver with ``workers`` sleeping stand-in workers on a multi-node ``Cluster``."""
    from orchestration_overhead import SPEC  # the tiny model's space, 200 FFN widths

    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.spec import Spec
    from paretoforge.testing import FakeWorker, multi_node_cluster

    d = json.loads(json.dumps(SPEC))
    d["search"].update(trials=trials, sampler="random", population_size=workers)
    d["cluster"]["workers"] = workers
    spec = Spec.from_dict(d)
    per_node = -(-workers // nodes)
    with multi_node_cluster(nodes=[{"num_cpus": per_node}] * nodes):
        t0 = time.perf_counter()
        summary = run_search(spec, root / "simulated", progress=Progress(trials, quiet=True),
                             worker_cls=FakeWorker, worker_kwargs={"sleep_s": sleep_s})
        wall = time.perf_counter() - t0
    st = summary.stats
    done, busy, window = _window(root / "simulated")
    n = len(done)
    driver_s = st["ask_s"] + st["tell_s"] + st["submit_s"]
    achieved = n / window
    # Workers come up one by one on 2 cores; the steady state starts when the last one has
    # taken its first trial. Busy time is each trial's evaluation interval clipped to it.
    first = {}
    for t in done:
        w = t.user_attrs.get(TrialAttr.WORKER)
        first[w] = min(first.get(w, t.datetime_start), t.datetime_start)
    all_up = max(first.values())
    end = max(t.datetime_complete for t in done)
    steady = (end - all_up).total_seconds()
    clipped = 0.0
    for t in done:
        dur = float(t.user_attrs.get(TrialAttr.TIMINGS, {}).get("total_s", 0.0))
        t_end = (t.datetime_complete - all_up).total_seconds()
        clipped += max(0.0, min(t_end, steady) - max(t_end - dur, 0.0))
    in_steady = sum(t.datetime_complete > all_up for t in done)
    return {
        "nodes": nodes,
        "workers": workers,
        "sleep_s": sleep_s,
        "completed": summary.completed,
        "cached": summary.cached,
        "built": n,
        "run_search_wall_s": round(wall, 2),
        "loop_wall_s": round(st["wall_s"], 2),
        "worker_startup_s": round(st["first_ready_s"] or 0.0, 2),
        "steady_window_s": round(window, 2),
        "ideal_trials_per_s": round(workers / sleep_s, 2),
        "achieved_trials_per_s": round(achieved, 2),
        "utilisation": round(busy / (workers * window), 4),
        "workers_seen": len(first),
        "all_workers_busy_after_s": round((all_up - min(first.values())).total_seconds(), 2),
        "all_up_window_s": round(steady, 2),
        "all_up_trials_per_s": round(in_steady / steady, 2) if steady > 0 else None,
        "all_up_utilisation": round(clipped / (workers * steady), 4) if steady > 0 else None,
        "driver_ms_per_trial": round(1e3 * driver_s / max(1, summary.completed), 3),
        "breakdown_ms_per_trial": {k: round(1e3 * st[f"{k}_s"] / max(1, summary.completed), 3)
                                   for k in ("ask", "tell", "submit", "wait")},
        "driver_saturation_trials_per_s": round(summary.completed / driver_s, 1)
        if driver_s > 0 else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["real", "simulated"],
                    choices=["real", "simulated"])
    ap.add_argument("--trials", type=int, default=24, help="completed trials per real run")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--profiles", nargs="+", default=None,
                    help="measure these profiles instead of the quickstart's (cpu-1t cpu)")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--sim-workers", type=int, default=64)
    ap.add_argument("--sim-trials", type=int, default=640)
    ap.add_argument("--sleep-s", type=float, default=5.0)
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="wait up to this many seconds for the 1-minute load average < 0.6")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    wait_quiet(args.wait_quiet)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = machine("ray", "optuna", "torch", "onnxruntime")
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="pf-scaling-") as d:
        root = Path(d)
        if "real" in args.parts:
            # The base model, trained once and cached, outside the timed runs.
            subprocess.run([str(Path(sys.executable).parent / "paretoforge"), "search",
                            str(ROOT / "examples" / "quickstart.yaml"), "--run-dir",
                            str(root / "warmup"), "--trials", "1", "--quiet"], check=True)
            key = "real" if not args.profiles else f"real-{'-'.join(args.profiles)}"
            results[key] = {"date": results["date"], "trials": args.trials,
                            "load_avg_1m_before":
                            round(os.getloadavg()[0], 2),
                            "runs": real_part(args.trials, args.workers, root, args.profiles)}
        if "simulated" in args.parts:
            results["simulated"] = {"date": results["date"], **simulated_part(
                args.nodes, args.sim_workers, args.sim_trials, args.sleep_s, root)}
            print(json.dumps(results["simulated"]), flush=True)
    write_result(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
