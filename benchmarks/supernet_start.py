"""The quickstart's supernet trained on Ray Train workers and in the driver's process (Ray
Train's local mode, ``one_shot.train_workers: 0``), side by side.

The base is prepared once (from the cache when it is there), then the supernet of the
quickstart's space and recipe is trained from a cold cache of its own ``--rounds`` times each
way, the ways alternating, on one local Ray cluster started as a search starts it (loopback,
no dashboard, so no preemption watcher and no autoscaling requests). For each training it
reports the wall time of the ``train_supernet`` call, when its first epoch began (the workers'
``events.jsonl``) and how long its epochs took: on a supernet this small, what the data
parallel way costs is mostly starting Ray Train's controller and worker processes.

Nothing else runs beside it here, unlike in a search, whose workers start while the supernet
trains; the quickstart's own phase times are in ``benchmarks/one_shot.py``'s run.

Usage:
    .venv/bin/python benchmarks/supernet_start.py [--workers 2 0] [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _train(prepared, options, workers: int) -> dict:
    from paretoforge.pipeline.supernet import PROGRESS_DIR_SUFFIX, train_supernet

    with tempfile.TemporaryDirectory(prefix="pf-sn-bench-") as cache:
        os.environ["PARETOFORGE_CACHE"] = cache  # a cold supernet cache for this call
        storage = Path(cache) / "runs"
        t0, start = time.perf_counter(), time.time()
        path = train_supernet(prepared, options, workers=workers, storage_dir=storage,
                              cpus_per_worker=1, log=lambda *_: None)
        wall = time.perf_counter() - t0
        events = [json.loads(line) for line in
                  (storage / f"{path.name}{PROGRESS_DIR_SUFFIX}" / "events.jsonl")
                  .read_text().splitlines()]
    begun = [e["time"] for e in events if e["event"] == "epoch_start"]
    ended = [e["time"] for e in events if e["event"] == "epoch_end"]
    return {"workers": workers, "wall_s": round(wall, 2),
            "first_epoch_after_s": round(min(begun) - start, 2),
            "epochs_s": round(max(ended) - min(begun), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 0],
                    help="Ray Train workers per way; 0: in this process")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--spec", default=str(ROOT / "examples/quickstart.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/supernet_start.json"))
    args = ap.parse_args()

    from paretoforge._ray_auth import ensure_ray_auth, start_local_cluster
    from paretoforge.pipeline.oneshot import supernet_options
    from paretoforge.pipeline.prepare import prepare_cached
    from paretoforge.spec import Spec

    spec = Spec.from_file(args.spec)
    prepared = prepare_cached(spec, log=lambda *_: None).for_workers()
    space = spec.space.search_space()
    options = supernet_options(spec, space, prepared.num_layers, prepared.num_heads)
    ensure_ray_auth()
    start_local_cluster(num_cpus=max(max(args.workers), 1))
    load = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for r in range(args.rounds):
        for w in args.workers:
            row = {"round": r, **_train(prepared, options, w)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for w in args.workers:
        mine = [x for x in rows if x["workers"] == w]
        summary[str(w)] = {k: statistics.median(x[k] for x in mine)
                           for k in ("wall_s", "first_epoch_after_s", "epochs_s")}
    write_result(Path(args.out), {
        "command": "python benchmarks/supernet_start.py --workers "
                   + " ".join(map(str, args.workers)) + f" --rounds {args.rounds}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "spec": os.path.relpath(args.spec, ROOT), "supernet_epochs": options.epochs,
        "loadavg_before": load, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine("ray", "torch"), "runs": rows, "median_by_workers": summary,
    })
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
