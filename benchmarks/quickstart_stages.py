"""The quickstart's per-stage cost: seconds per trial in each build stage, and the measurement's
seconds per profile per trial, read from a finished run.

Reads every trial the run built itself (not answered from the study's cache, not completed
from an artifact already on disk) and reports, by phase (one-shot sub-networks, finishing
rungs, the unpruned base at each precision), the median of each stage's seconds from the
manifests (``derive``, ``recover``, ``export``, ``passes``, ``score``, ``measure``), and per
profile the median of the measurement's own wall time (``measurements.<p>.cost_s.total_s``:
sessions, warm-up, timed rounds, waits for the node's gate and the placement report) with its
parts. The target (issue 12) is <= 1 s per profile per trial at the median over all trials.

Usage:
    .venv/bin/paretoforge search examples/quickstart.yaml --run-dir RUN
    .venv/bin/python benchmarks/quickstart_stages.py --run RUN \
        [--out benchmarks/results/quickstart_stages.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finished_run, machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _phase(attrs: dict[str, Any]) -> str:
    from paretoforge.names import TrialAttr

    if attrs.get(TrialAttr.IS_BASE) or attrs.get(TrialAttr.BASE_PRECISION):
        return "base"
    return str(attrs.get(TrialAttr.PHASE) or "per-candidate")


def stage_costs(run_dir: Path) -> dict[str, Any]:
    """Median seconds per stage and per profile's measurement, by phase and over all."""
    from paretoforge.names import TrialAttr
    from paretoforge.orchestrator.results import load_run

    run = load_run(run_dir)
    stages: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    measure: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    counts: dict[str, int] = defaultdict(int)
    fidelity: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t in run.study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if (t.state.name != "COMPLETE" or TrialAttr.CACHED_FROM in attrs
                or attrs.get(TrialAttr.REUSED_ARTIFACT) or not attrs.get(TrialAttr.ARTIFACT_DIR)):
            continue
        manifest_path = run.artifact_dir(t) / "manifest.json"
        if not manifest_path.is_file():
            continue
        manifest = json.loads(manifest_path.read_text())
        phase = _phase(attrs)
        counts[phase] += 1
        for group in (phase, "all"):
            for rec in manifest.get("stages", []):
                stages[group][rec["name"]].append(float(rec["seconds"]))
            stages[group]["total"].append(float(manifest.get("timings", {}).get("total_s", 0.0)))
        for profile, m in manifest.get("measurements", {}).items():
            if m.get("predicted"):
                continue
            fidelity[profile][str(m.get("fidelity", "full"))] += 1
            cost = m.get("cost_s", {})
            for group in (phase, "all"):
                for part, seconds in cost.items():
                    measure[group][profile][part].append(float(seconds))
    return {
        "trials_built": dict(counts),
        "fidelity": {p: dict(v) for p, v in fidelity.items()},
        "stage_median_s": {g: {n: _median(v) for n, v in s.items()} for g, s in stages.items()},
        "measure_median_s": {g: {p: {part: _median(v) for part, v in parts.items()}
                                 for p, parts in profs.items()} for g, profs in measure.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished quickstart run directory")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/quickstart_stages.json"))
    args = ap.parse_args()
    run_dir = finished_run(args.run)
    if run_dir is None:
        return 2
    costs = stage_costs(run_dir)
    overall = costs["measure_median_s"].get("all", {})
    per_profile = {p: v.get("total_s") for p, v in overall.items()}
    result = {
        "command": f"python benchmarks/quickstart_stages.py --run {run_dir}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run": str(run_dir),
        **costs,
        "measure_per_profile_per_trial_median_s": per_profile,
        "target_s": 1.0,
        "met": bool(per_profile) and all(v is not None and v <= 1.0
                                         for v in per_profile.values()),
        "machine": machine("ray", "torch", "onnxruntime", "optuna"),
    }
    write_result(Path(args.out), result)
    print(json.dumps({k: result[k] for k in ("trials_built", "fidelity",
                                             "measure_per_profile_per_trial_median_s", "met")}))
    print(json.dumps(result["measure_median_s"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
