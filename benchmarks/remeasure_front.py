"""Quiet re-measurement of a run's exported front members with plain ONNX Runtime.

Does the front hold outside the search? Every front member of ``--run`` is exported
(``paretoforge export``'s code path: files copied, checksums verified) and its ``model.onnx``
is timed again by this script alone, with nothing of paretoforge's runtime layer or latency
protocol: a plain ``onnxruntime.InferenceSession`` (CPU provider, default graph
optimisations, one intra-op and one inter-op thread, sequential execution), the process pinned
to one core, inputs of the manifest's shape (batch 1) taken from the run's held-out data
(``load_spec_task`` on the run's spec: real samples, never zeros).

Members are timed in ``--rounds`` interleaved rounds (each round: every member, in a shuffled
order, ``--calls`` timed calls after ``--warmup`` untimed ones), so slow drift of the machine
spreads over all members instead of biasing one; a member's latency is the median of all its
timed calls. Reported against the ``latency_p50_ms@<profile>`` each member has in the run:
the ratio per member (target: within +-15%) and Kendall's tau between the two rankings
(target >= 0.8; tau-b, ties counted as ties).

Usage:
    python benchmarks/remeasure_front.py --run runs/quickstart
    python benchmarks/remeasure_front.py --run runs/minilm --wait-quiet 600

Results go to ``benchmarks/results/remeasure_front_<run name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine, wait_quiet, write_result  # noqa: E402


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b of two equally long sequences (ties in either one count as ties).

    Example:
        >>> kendall_tau_b([1, 2, 3], [1, 3, 2])
        0.3333333333333333
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two sequences of the same length >= 2, got {len(x)}, {len(y)}")
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denom = np.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return float((concordant - discordant) / denom) if denom else 0.0


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _feeds(manifest: dict[str, Any], heldout: dict[str, np.ndarray], n: int) -> list[dict]:
    """``n`` single-example feeds in the manifest's input names, dtypes and shapes."""
    out = []
    for i in range(n):
        feed = {}
        for spec in manifest["inputs"]:
            x = heldout[spec["name"]][i : i + 1]
            want = [1, *spec["shape"][1:]]
            if list(x.shape) != want:
                raise SystemExit(f"held-out input {spec['name']} has shape {list(x.shape)}, the "
                                 f"manifest says {want}")
            feed[spec["name"]] = np.ascontiguousarray(x.astype(spec["dtype"]))
        out.append(feed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished run directory")
    ap.add_argument("--profile", default="cpu-1t", help="whose recorded p50 to compare with")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per member per round")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--core", type=int, default=None, help="core to pin to (default: the last)")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="wait up to this many seconds for the 1-minute load average < 0.6")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from paretoforge.orchestrator.results import export_trial, load_run
    from paretoforge.pipeline.prepare import load_spec_task
    from paretoforge.spec import Spec

    run = load_run(args.run)
    metric = f"latency_p50_ms@{args.profile}"
    front = run.front()
    if len(front) < 2:
        raise SystemExit(f"{args.run}: the front has {len(front)} member(s); need >= 2 to rank")
    task = load_spec_task(Spec.from_file(args.run / "spec.yaml"))
    heldout = task.feeds("heldout")

    wait_quiet(args.wait_quiet)
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    load_before = os.getloadavg()[0]

    members: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pf-remeasure-") as d:
        for m in front:
            out = export_trial(run, m.trial, Path(d) / f"trial-{m.trial}")
            manifest = json.loads((out / "manifest.json").read_text())
            if metric not in manifest["metrics"]:
                raise SystemExit(f"trial {m.trial} has no {metric}; pick --profile among "
                                 f"{sorted(k for k in manifest['metrics'] if '@' in k)}")
            members.append({"trial": m.trial, "dir": out, "manifest": manifest,
                            "recorded_ms": float(manifest["metrics"][metric])})
        sessions = {m["trial"]: _session(m["dir"] / "model.onnx") for m in members}
        feeds = {m["trial"]: _feeds(m["manifest"], heldout, 64) for m in members}
        times: dict[int, list[float]] = {m["trial"]: [] for m in members}
        order = [m["trial"] for m in members]
        rng = random.Random(0)
        for _ in range(args.rounds):
            rng.shuffle(order)
            for n in order:
                sess, fs = sessions[n], feeds[n]
                for i in range(args.warmup):
                    sess.run(None, fs[i % len(fs)])
                for i in range(args.calls):
                    f = fs[i % len(fs)]
                    t = time.perf_counter_ns()
                    sess.run(None, f)
                    times[n].append((time.perf_counter_ns() - t) / 1e6)
    load_after = os.getloadavg()[0]

    rows = []
    for m in sorted(members, key=lambda m: m["recorded_ms"]):
        t = np.asarray(times[m["trial"]])
        p50 = float(np.median(t))
        rows.append({"trial": m["trial"], "config": m["manifest"]["config"],
                     "recorded_p50_ms": m["recorded_ms"], "remeasured_p50_ms": round(p50, 5),
                     "remeasured_p90_ms": round(float(np.percentile(t, 90)), 5),
                     "calls": int(t.size), "ratio": round(p50 / m["recorded_ms"], 4),
                     "within_15pct": bool(abs(p50 / m["recorded_ms"] - 1) <= 0.15)})
    tau = kendall_tau_b([r["recorded_p50_ms"] for r in rows],
                        [r["remeasured_p50_ms"] for r in rows])
    result = {
        "run": str(args.run),
        "profile": args.profile,
        "members": len(rows),
        "kendall_tau_b": round(tau, 4),
        "all_within_15pct": all(r["within_15pct"] for r in rows),
        "max_abs_rel_diff": round(max(abs(r["ratio"] - 1) for r in rows), 4),
        "rows": rows,
        "protocol": f"plain onnxruntime, CPU EP, 1 intra/1 inter thread, sequential, pinned to "
                    f"core {core}; {args.rounds} interleaved rounds x {args.calls} calls "
                    f"(+{args.warmup} warm-up) per member; batch 1 held-out inputs",
        "machine": machine("onnxruntime"),
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"remeasure_front_{args.run.name}.json"
    write_result(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    for r in rows:
        print(f"trial {r['trial']:>4}  recorded {r['recorded_p50_ms']:.4f} ms  "
              f"remeasured {r['remeasured_p50_ms']:.4f} ms  ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
