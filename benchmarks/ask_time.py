"""The driver's ask time over 1,000 trials with the default (one-shot) sampler, against the
median one-shot trial time.

Runs the driver's own ask path -- ``study.ask()`` on an Optuna journal storage as a search
keeps it, then ``SearchSpace.suggest`` (the per-layer quickstart space, 139,808 configs) --
and tells each trial made-up but structured values (bigger sub-networks: more accurate and
slower), 1,000 times, recording the ask time of each. The median trial time it is compared
with is the one-shot trials' median build + measure time from
``benchmarks/results/one_shot.json`` (``benchmarks/one_shot.py``, run first on this machine);
issue 11 asks the ask time to stay <= 10% of it.

Usage:
    .venv/bin/python benchmarks/ask_time.py [--trials 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _median_trial_s() -> float | None:
    path = ROOT / "benchmarks/results/one_shot.json"
    if not path.is_file():
        return None
    runs = Path(json.loads(path.read_text())["run_dirs"]) / "one-shot"
    from paretoforge.names import Phase, TrialAttr
    from paretoforge.orchestrator.results import load_run

    if not runs.is_dir():
        return json.loads(path.read_text()).get("one_shot", {}).get("median_trial_s")
    times = [t.user_attrs[TrialAttr.TIMINGS]["total_s"] for t in load_run(runs).trials()
             if t.user_attrs.get(TrialAttr.PHASE) == Phase.ONE_SHOT
             and TrialAttr.CACHED_FROM not in t.user_attrs and not t.user_attrs.get(
                 TrialAttr.IS_BASE)]
    return statistics.median(times) if times else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/ask_time.json"))
    args = ap.parse_args()

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from paretoforge.samplers import make_sampler
    from paretoforge.search_spaces import SearchSpace
    from paretoforge.spec import Spec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = Spec.from_file(ROOT / "examples/quickstart.yaml")
    space = SearchSpace.from_preset(spec.space.preset, spec.space.dimensions)
    d = tempfile.mkdtemp(prefix="pf-ask-")
    storage = JournalStorage(JournalFileBackend(str(Path(d) / "study.journal")))
    study = optuna.create_study(directions=["maximize", "minimize"], storage=storage,
                                sampler=make_sampler(spec.search), study_name="ask")
    asks = []
    for _ in range(args.trials):
        t0 = time.perf_counter()
        trial = study.ask()
        cfg = space.suggest(trial)
        asks.append(time.perf_counter() - t0)
        heads = cfg.heads_kept if isinstance(cfg.heads_kept, tuple) else (cfg.heads_kept,) * \
            cfg.layers_kept
        ffn = cfg.ffn_kept if isinstance(cfg.ffn_kept, tuple) else (cfg.ffn_kept,) * \
            cfg.layers_kept
        size = sum(h * (0.5 + f) for h, f in zip(heads, ffn, strict=True))
        acc = 1.0 - 0.5 / (1.0 + size) - (0.01 if cfg.precision == "int8" else 0.0)
        lat = (0.05 + 0.02 * size) * (0.7 if cfg.precision == "int8" else 1.0)
        study.tell(trial, [acc, lat])
    marks = sorted({100, 200, 500, 1000, len(asks)})
    window = {n: statistics.median(asks[max(0, n - 50):n]) for n in marks if n <= len(asks)}
    median_trial = _median_trial_s()
    worst = max(window.values())
    result = {
        "command": f".venv/bin/python benchmarks/ask_time.py --trials {args.trials}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sampler": spec.search.sampler, "space": spec.space.preset, "space_size": space.size(),
        "ask_ms_median_of_50_before": {str(k): round(v * 1000, 2) for k, v in window.items()},
        "ask_ms_max": round(max(asks) * 1000, 2),
        "median_one_shot_trial_s": median_trial,
        "ask_over_trial_at_worst_window": (round(worst / median_trial, 4)
                                           if median_trial else None),
        "machine": machine("optuna"),
    }
    write_result(Path(args.out), result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
