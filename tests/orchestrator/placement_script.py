"""Run a real search on a 2-node ``ray.cluster_utils.Cluster`` whose nodes carry different
hardware resources, then a search whose profile no node serves.

Run by ``test_placement_cluster.py`` in a subprocess (one Ray instance per process; the test
session has its own): ``python placement_script.py SPEC_JSON REFUSED_SPEC_JSON RUN_DIR OUT_JSON``.
The head node carries ``hw:alpha``, the second node ``hw:beta``; each has one CPU, so each holds
one of the two workers. The script writes the node ids, the search's counts and the refusal to
OUT_JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from paretoforge.testing import multi_node_cluster


def main(spec_json: str, refused_json: str, run_dir: str, out_json: str) -> None:
    from paretoforge.exceptions import PlacementError
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.spec import Spec

    spec = Spec.from_dict(json.loads(spec_json))
    with multi_node_cluster(head={"num_cpus": 1, "resources": {"hw:alpha": 1}},
                            nodes=[{"num_cpus": 1, "resources": {"hw:beta": 1}}]) as cluster:
        out: dict = {"nodes": {"hw:alpha": cluster.head.node_id,
                               "hw:beta": cluster.nodes[0].node_id}}
        try:
            summary = run_search(spec, run_dir, progress=Progress(spec.search.trials,
                                                                  live=False, quiet=True))
            out.update(completed=summary.completed, failed=summary.failed)
            refused_dir = Path(run_dir).parent / "refused"
            try:
                run_search(Spec.from_dict(json.loads(refused_json)), refused_dir,
                           progress=Progress(1, live=False, quiet=True))
                out["refused"] = None
            except PlacementError as e:
                out["refused"] = {"error": str(e),
                                  "artifacts": [p.name for p in refused_dir.glob("artifacts/*")]}
        finally:
            Path(out_json).write_text(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:5])
