"""Measurement cost: wall time of one profile's measurement per trial, stage by stage.

The quickstart's situation on one node, in one process: quickstart-like candidates (the cached
``vit-digits`` base, real surgery, export and graph passes; the quickstart's ``cpu-1t`` and
``cpu`` profiles) are measured while a builder thread distils a pruned student next to them,
holding the node's core gate shared as a worker's build does. Each candidate is measured both
ways, side by side, in turn:

* ``before``: the protocol as it was -- one session, 20 warm-up calls, timed until the 95% CI
  of the median is within 2% (>= 50 runs), then a placement report; ``cpu`` with the gate
  held exclusively around all of it, ``cpu-1t`` shared; the build never yields, so ``cpu``
  waits for the builder's whole distillation.
* ``after``: :func:`paretoforge.orchestrator.bench.measure_profile` as a worker calls it --
  independent rounds against the run's reference (the base, fp32), the gate held around the
  timed calls only, the builder yielding at each distillation step.

Per stage (after): sessions, warm-up, timed rounds, gate wait, placement; per profile: the
median wall seconds per trial, before and after.

Usage:
    python benchmarks/measurement_cost.py                 # 4 candidates
    python benchmarks/measurement_cost.py --candidates 2 --wait-quiet 120

Results go to ``benchmarks/results/measurement_cost.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, wait_quiet, write_result  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [  # quickstart space: layers, heads, FFN kept, precision
    (1, 1, 0.25, "int8"), (2, 2, 0.5, "fp32"), (3, 4, 0.75, "int8"), (4, 4, 1.0, "fp32"),
    (2, 3, 0.5, "int8"), (1, 4, 1.0, "fp32"),
]
PROFILES = ("cpu-1t", "cpu")


class Builder(threading.Thread):
    """Distils a pruned student in a loop, each distillation inside the gate's shared hold."""

    def __init__(self, ctx: Any, gate: Any) -> None:
        super().__init__(daemon=True)
        from paretoforge.pipeline import stages as st
        from paretoforge.search_spaces import CandidateConfig

        self.ctx, self.gate = ctx, gate
        self.derived = st.derive(ctx, CandidateConfig(layers_kept=2, heads_kept=2, ffn_kept=0.5,
                                                      precision="fp32"))
        self.stop = threading.Event()
        self.builds: list[float] = []

    def run(self) -> None:
        import torch

        from paretoforge.pipeline import stages as st

        torch.set_num_threads(1)
        if hasattr(os, "sched_setaffinity"):  # a worker's own core, as the worker pins it
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
        while not self.stop.is_set():
            with self.gate.shared():
                t0 = time.perf_counter()
                st.recover(self.ctx, self.derived)
                self.builds.append(time.perf_counter() - t0)


def measure_before(path: Path, profile: Any, samples: dict[str, Any], cores: list[int],
                   gate: Any) -> dict[str, float]:
    from paretoforge.evaluators.latency import measure_latency
    from paretoforge.kernels.runtime import placement_report

    hold = gate.exclusive if profile.intra_op_threads is None else gate.shared
    t0 = time.perf_counter()
    with hold():
        t1 = time.perf_counter()
        measure_latency(path, profile, samples, cores=cores, warmup=20, warmup_seconds=None,
                        min_runs=50, max_seconds=3.0, rounds=1, max_rounds=1)
        t2 = time.perf_counter()
        placement_report(path, profile, samples, cores=cores)
    t3 = time.perf_counter()
    return {"gate_wait_s": t1 - t0, "protocol_s": t2 - t1, "placement_s": t3 - t2,
            "held_s": t3 - t1, "total_s": t3 - t0}


def measure_after(path: Path, profile: Any, samples: dict[str, Any], cores: list[int],
                  gate: Any, reference: Path) -> dict[str, float]:
    from paretoforge.orchestrator.bench import measure_profile

    hold = gate.exclusive if profile.intra_op_threads is None else gate.shared
    t0 = time.perf_counter()
    rec = measure_profile(path, profile, samples, cores=cores, node_id="bench",
                          reference=reference, hold=hold)
    total = time.perf_counter() - t0
    c = rec["cost_s"]
    return {"sessions_s": c["sessions_s"], "warmup_s": c["warmup_s"], "timed_s": c["timed_s"],
            "gate_wait_s": c["hold_wait_s"], "held_s": c["held_s"],
            "placement_s": c["placement_s"], "total_s": total, "rounds": rec["rounds"],
            "converged": float(rec["converged"]), "rel_p50": rec["rel_p50"],
            "spread_rel": rec["spread_rel"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=4, help="How many configs (max 6).")
    ap.add_argument("--epochs", type=int, default=10, help="The builder's distillation epochs.")
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="Wait for a quiet machine.")
    ap.add_argument("--out", type=Path, default=RESULTS / "measurement_cost.json")
    args = ap.parse_args()
    load = wait_quiet(args.wait_quiet)

    import torch

    from paretoforge._system import set_yield_point, usable_cores
    from paretoforge.hw_profiles import get_profile
    from paretoforge.orchestrator.gate import LocalGate
    from paretoforge.pipeline import BuildContext, prepare_cached
    from paretoforge.pipeline import stages as st
    from paretoforge.search_spaces import CandidateConfig
    from paretoforge.spec import Spec

    torch.set_num_threads(1)
    spec = Spec.from_file(Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml")
    recovery = spec.recovery.model_copy(update={"epochs": args.epochs})
    prepared = prepare_cached(spec, log=lambda *_: None)
    ctx = BuildContext(prepared, recovery=recovery, seed=spec.search.seed)
    plain = BuildContext(prepared, recovery=recovery.model_copy(update={"epochs": 0}),
                         seed=spec.search.seed)
    cores = usable_cores()
    gate = LocalGate()
    samples, _ = st.latency_samples(ctx)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pf-cost-") as d:
        reference = st.reference_artifact(plain, d)
        paths = []
        for i, (layers, heads, ffn, precision) in enumerate(CONFIGS[:args.candidates]):
            cfg = CandidateConfig(layers_kept=layers, heads_kept=heads, ffn_kept=ffn,
                                  precision=precision)
            out = Path(d) / f"c{i}"
            out.mkdir()
            exported = st.export(plain, st.derive(plain, cfg), out)
            paths.append((cfg.key, st.passes(plain, exported, cfg, out / "model.onnx").path))
        builder = Builder(ctx, gate)
        builder.start()
        time.sleep(1.0)  # the builder is inside a distillation
        try:
            for key, path in paths:
                for name in PROFILES:
                    profile = get_profile(name)
                    pcores = cores if profile.intra_op_threads is None else cores[:1]
                    set_yield_point(None)  # before: builds never yield
                    before = measure_before(path, profile, samples, pcores, gate)
                    set_yield_point(gate.yield_to_writers)
                    after = measure_after(path, profile, samples, pcores, gate, reference)
                    rows.append({"candidate": key, "profile": name, "before": before,
                                 "after": after})
                    print(f"{key} {name:7s} before {before['total_s']:.3f}s "
                          f"(gate {before['gate_wait_s']:.3f}) after {after['total_s']:.3f}s "
                          f"(gate {after['gate_wait_s']:.3f}, rounds {after['rounds']})",
                          flush=True)
        finally:
            builder.stop.set()
            set_yield_point(gate.yield_to_writers)
            builder.join()
            set_yield_point(None)

    def med(profile: str, mode: str, stage: str) -> float:
        return statistics.median(r[mode][stage] for r in rows if r["profile"] == profile)

    summary = {p: {"before_median_s": med(p, "before", "total_s"),
                   "after_median_s": med(p, "after", "total_s"),
                   "before_stages_median_s": {s: med(p, "before", s) for s in
                                              ("gate_wait_s", "protocol_s", "placement_s")},
                   "after_stages_median_s": {s: med(p, "after", s) for s in
                                             ("sessions_s", "warmup_s", "timed_s",
                                              "gate_wait_s", "placement_s")}}
               for p in PROFILES}
    result = {"benchmark": "measurement_cost",
              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "loadavg_1m_start": load, "loadavg_1m_end": os.getloadavg()[0],
              "machine": machine("onnxruntime", "torch"),
              "builder_build_s_median": statistics.median(builder.builds or [0.0]),
              "summary": summary, "rows": rows}
    write_result(args.out, result)
    for p, s in summary.items():
        print(f"{p}: before {s['before_median_s']:.3f}s after {s['after_median_s']:.3f}s "
              f"per trial (median); after stages {s['after_stages_median_s']}")
    with contextlib.suppress(Exception):
        print("written", args.out.relative_to(Path.cwd()))


if __name__ == "__main__":
    main()
