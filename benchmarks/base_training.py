"""The quickstart's base model trained alone, on 1 and on 2 torch threads: the yardstick of
issue 11's "whole one-shot search <= 2.5x the base training", measured outside a search.

A search trains its base with as many threads as there are idle cores
(:func:`paretoforge._system.idle_cores`) and prints its own wall time over that training;
this gives the same training in isolation (a fresh cache directory each time, nothing else in
the process), so that a run's printed ratio can be read against the machine's own speed.

Usage:
    .venv/bin/python benchmarks/base_training.py [--threads 1 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--spec", default=str(ROOT / "examples/quickstart.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/base_training.json"))
    args = ap.parse_args()

    import torch

    from paretoforge.models.recipes import get_recipe
    from paretoforge.models.vit import get_base_model
    from paretoforge.pipeline.prepare import load_spec_task
    from paretoforge.spec import Spec

    spec = Spec.from_file(args.spec)
    task = load_spec_task(spec)
    recipe = get_recipe(spec.model.recipe, **spec.model.overrides)
    load = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for n in args.threads:
        torch.set_num_threads(n)
        with tempfile.TemporaryDirectory(prefix="pf-base-") as cache:
            t0 = time.perf_counter()
            _, info = get_base_model(recipe, task, Path(cache))
            seconds = time.perf_counter() - t0
        rows.append({"threads": n, "seconds": round(seconds, 1),
                     "validation_accuracy": info.get("heldout_accuracy")})
        print(f"{n} thread(s): {seconds:.1f} s", flush=True)
    write_result(Path(args.out), {
        "command": "python benchmarks/base_training.py --threads "
                   + " ".join(map(str, args.threads)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "spec": os.path.relpath(args.spec, ROOT), "recipe": spec.model.recipe,
        "loadavg_before": load, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(), "runs": rows,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
