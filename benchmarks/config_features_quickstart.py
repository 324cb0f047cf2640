"""Config-only predictor features against the built graphs, on the quickstart benchmark's data.

Reads ``results/predictor_quickstart.json`` (every config of the quickstart space, built and
measured on cpu-1t; see ``predictor_quickstart.py``) and, over random orders, estimates each
unbuilt candidate's features from the first ``n`` built ones
(:class:`~paretoforge.evaluators.config_features.ConfigFeatureEstimator`), then compares
(1) the features with those of its graph and (2) the latency predictor's held-out MAPE when it
predicts from config features instead of graph features. Seconds; nothing is measured.

Usage:
    python benchmarks/config_features_quickstart.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paretoforge.evaluators.config_features import ConfigFeatureEstimator
from paretoforge.evaluators.predictor import LatencyPredictor, features_from

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("macs_per_token", "weight_mbytes", "nodes")


def main(repeats: int = 20) -> None:
    rows = json.loads((RESULTS / "predictor_quickstart.json").read_text())["rows"]
    out: dict[str, dict] = {"features": {}, "predictor_mape": {}}
    for n in (3, 5, 8, 16, 40):
        errs: dict[str, list[float]] = {k: [] for k in NAMES}
        for rep in range(repeats):
            order = list(range(len(rows)))
            random.Random(rep).shuffle(order)
            est = ConfigFeatureEstimator()
            for i in order[:n]:
                est.add_manifest(rows[i])
            for i in order[n:]:
                true = features_from(rows[i], profile="cpu-1t")
                got = est.features(rows[i]["config"], profile="cpu-1t")
                for k in NAMES:
                    errs[k].append(abs(got[k] - true[k]) / true[k])
        out["features"][n] = {k: {"mean_rel_err": float(np.mean(v)),
                                  "max_rel_err": float(np.max(v))} for k, v in errs.items()}
    for n in (8, 16, 40, 77):
        graph, config = [], []
        for rep in range(repeats):
            order = list(range(len(rows)))
            random.Random(rep).shuffle(order)
            est, p = ConfigFeatureEstimator(), LatencyPredictor("cpu-1t")
            for i in order[:n]:
                est.add_manifest(rows[i])
                p.add(features_from(rows[i], profile="cpu-1t"), rows[i]["p50_ms"])
            test = order[n:]
            graph.append(p.error_report([(features_from(rows[i], profile="cpu-1t"),
                                          rows[i]["p50_ms"]) for i in test])["mape"])
            config.append(p.error_report([(est.features(rows[i]["config"], profile="cpu-1t"),
                                           rows[i]["p50_ms"]) for i in test])["mape"])
        out["predictor_mape"][n] = {"graph_features": float(np.mean(graph)),
                                    "config_features": float(np.mean(config))}
    (RESULTS / "config_features_quickstart.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
