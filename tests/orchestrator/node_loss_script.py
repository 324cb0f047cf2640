"""Run a real search on a 3-node ``ray.cluster_utils.Cluster`` and remove a node mid-trial.

Run by ``test_faults.py`` in a subprocess (one Ray instance per process; the test session has
its own): ``python node_loss_script.py SPEC_JSON RUN_DIR OUT_JSON``. The head node has no CPUs
(it holds the driver and the gates); each of the two worker nodes has one CPU and one worker.
When trial 1 is under way (its temporary artifact directory exists), the worker's node is
removed. The script writes what happened to OUT_JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from paretoforge.testing import multi_node_cluster  # noqa: E402


def main(spec_json: str, run_dir: str, out_json: str) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.spec import Spec

    spec = Spec.from_dict(json.loads(spec_json))
    removed: dict = {}
    events: list = []
    with multi_node_cluster(nodes=[{"num_cpus": 1}] * 2) as cluster:

        def on_event(kind: str, data: dict) -> None:
            events.append([kind, {k: v for k, v in data.items() if k != "node_id"}])
            if kind != "trial_started" or removed or data["trial"] < 1:
                return
            tmp = Path(run_dir) / "artifacts" / f".{data['key']}.tmp-{data['pid']}"
            deadline = time.monotonic() + 30
            while not tmp.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            node = cluster.node(data["node_id"])
            removed.update(trial=data["trial"], worker=data["worker"], mid_trial=tmp.exists())
            cluster.remove_node(node)

        summary = run_search(spec, run_dir, progress=Progress(spec.search.trials, live=False,
                                                              on_event=on_event))
        Path(out_json).write_text(json.dumps({
            "completed": summary.completed, "failed": summary.failed, "removed": removed,
            "stats": summary.stats, "events": events,
        }))


if __name__ == "__main__":
    main(*sys.argv[1:4])
