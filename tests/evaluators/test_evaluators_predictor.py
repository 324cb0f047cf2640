from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from paretoforge.evaluators import Measurement
from paretoforge.evaluators.predictor import FEATURES, LatencyPredictor, features_from
from paretoforge.exceptions import MeasurementError
from paretoforge.hw_profiles import get_profile


def synthetic(n: int, seed: int = 0, noise: float = 0.0) -> tuple[list[dict], list[float]]:
    """Latencies from a known additive cost model, optionally with relative noise."""
    rng = np.random.default_rng(seed)
    feats, lat = [], []
    for _ in range(n):
        layers = float(rng.integers(1, 5))
        heads = layers * float(rng.integers(1, 5))
        int8 = float(rng.integers(0, 2))
        macs = layers * float(rng.integers(1, 5)) * 4096
        f = {"macs_fp32": macs * (1 - int8), "macs_int8": macs * int8, "heads": heads,
             "layers": layers, "nodes": 20 + 25 * layers, "weight_mbytes": macs * 4e-6,
             "int8": int8}
        y = 0.02 + 3e-6 * f["macs_fp32"] + 1e-6 * f["macs_int8"] + 0.004 * heads + 0.01 * layers
        feats.append(f)
        lat.append(y * (1 + noise * rng.standard_normal()))
    return feats, lat


def test_recovers_an_additive_cost_model() -> None:
    feats, lat = synthetic(60)
    p = LatencyPredictor("cpu-1t").fit(feats[:40], lat[:40])
    report = p.error_report(list(zip(feats[40:], lat[40:], strict=True)))
    assert report["mape"] < 1e-3 and report["within_10pct"] == 1.0
    assert set(report) == {"n", "mape", "within_10pct", "max_ape"}
    assert report["n"] == 20


def test_noisy_fit_stays_close_and_costs_are_non_negative() -> None:
    feats, lat = synthetic(80, noise=0.03)
    p = LatencyPredictor(get_profile("cpu-1t")).fit(feats[:50], lat[:50])
    assert p.profile == "cpu-1t"
    assert all(c >= 0 for c in p.coef_.values()) and p.intercept_ >= 0
    report = p.error_report(list(zip(feats[50:], lat[50:], strict=True)))
    assert report["mape"] < 0.1


def test_predict_is_labelled_and_positive() -> None:
    feats, lat = synthetic(20)
    p = LatencyPredictor("edge-arm").fit(feats, lat)
    value, predicted = p.predict(feats[0])
    assert predicted is True and value > 0
    # Fewer of everything than anything measured still costs more than nothing.
    assert p.predict({})[0] > 0
    m = p.predict_measurement(feats[0])
    assert isinstance(m, Measurement)
    assert m.predicted and m.stop_reason == "predicted" and m.profile == "edge-arm"
    assert m.p50_ms == pytest.approx(value)


def test_incremental_add_refits() -> None:
    feats, lat = synthetic(30)
    p = LatencyPredictor("cpu-1t", min_samples=8)
    for f, y in zip(feats[:7], lat[:7], strict=True):
        p.add(f, y)
    assert not p.is_ready
    with pytest.raises(MeasurementError, match="needs 8"):
        p.predict(feats[0])
    for f, y in zip(feats[7:], lat[7:], strict=True):
        p.add(f, y)
    assert p.is_ready and p.n_samples == 30
    assert p.error_report_train()["mape"] < 1e-3


def test_bad_values_are_named() -> None:
    p = LatencyPredictor("cpu-1t", min_samples=2)
    with pytest.raises(MeasurementError, match="'layers'"):
        p.add({"layers": -1.0}, 1.0)
    with pytest.raises(MeasurementError, match="finite time"):
        p.add({"layers": 1.0}, 0.0)
    with pytest.raises(MeasurementError, match="one latency per row"):
        p.fit([{"layers": 1.0}], [1.0, 2.0])
    with pytest.raises(MeasurementError, match="min_samples"):
        LatencyPredictor("cpu-1t", min_samples=1)
    with pytest.raises(MeasurementError, match="distinct"):
        LatencyPredictor("cpu-1t", features=("layers", "layers"))
    with pytest.raises(MeasurementError, match="held-out"):
        LatencyPredictor("cpu-1t", min_samples=2).fit(
            [{"layers": 1.0}, {"layers": 2.0}], [1.0, 2.0]).error_report([])


def test_state_round_trips_through_json() -> None:
    feats, lat = synthetic(20)
    p = LatencyPredictor("cpu-1t").fit(feats, lat)
    q = LatencyPredictor.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q.predict(feats[3]) == pytest.approx(p.predict(feats[3]))
    with pytest.raises(MeasurementError, match="format"):
        LatencyPredictor.from_dict({"format": "x"})
    # Too few measurements to fit is a valid state to keep.
    few = LatencyPredictor("cpu-1t")
    few.add(feats[0], lat[0])
    assert LatencyPredictor.from_dict(few.to_dict()).n_samples == 1


def test_features_from_graph_summary_and_manifest(
    eval_vit: torch.nn.Module, eval_onnx: Path, tmp_path: Path
) -> None:
    from paretoforge.kernels import apply_precision, graph_summary

    g32 = graph_summary(eval_onnx)
    g8 = graph_summary(apply_precision(eval_onnx, tmp_path / "int8.onnx", "int8"))
    cfg32 = {"layers_kept": 2, "heads_kept": 4, "ffn_kept": 1.0, "precision": "fp32"}
    f32 = features_from(g32, cfg32)
    f8 = features_from(g8, {**cfg32, "precision": "int8"})
    assert set(FEATURES) <= set(f32)
    # Quantization changes the rate per MAC, not the number of MACs.
    assert f32["macs_per_token"] == f8["macs_per_token"] > 0
    assert f32["macs_int8"] == 0 and f8["macs_fp32"] == 0 and f8["int8"] == 1.0
    assert f8["weight_mbytes"] < f32["weight_mbytes"]
    assert f32["heads"] == 8 and f32["layers"] == 2
    # Linear-layer MACs per token of a ViT block: 4 h^2 (attention) + 2 h * ffn (FFN).
    h, ffn = 32, 64
    assert f32["macs_per_token"] >= 2 * (4 * h * h + 2 * h * ffn)
    # A manifest: the plan gives the per-layer heads, placement the optimised node count.
    manifest = {"config": cfg32, "graph": g32,
                "plan": {"layers": [0, 1], "heads": [[0, 1], [2]], "neurons_per_layer": [8, 8]},
                "placement": {"cpu-1t": {"nodes_after": 50}, "cpu": {"nodes_after": 60}}}
    fm = features_from(manifest)
    assert fm["heads"] == 3 and fm["layers"] == 2 and fm["nodes"] == 50
    assert features_from(manifest, profile="cpu")["nodes"] == 60
    # Precision inferred from the graph when no config says it.
    assert features_from(g8)["int8"] == 1.0 and features_from(g32)["int8"] == 0.0
    with pytest.raises(MeasurementError, match="graph_summary"):
        features_from({"foo": 1})


def test_from_run_dirs_reads_measured_manifests(tmp_path: Path) -> None:
    feats, lat = synthetic(12)
    graph = {"node_count": 100, "matmul_weight_elems": 5000, "initializer_bytes": 20000,
             "quant_op_counts": {}}
    for i, y in enumerate(lat):
        d = tmp_path / "run" / "artifacts" / f"k{i}"
        d.mkdir(parents=True)
        cfg = {"layers_kept": 1 + i % 4, "heads_kept": 2, "precision": "fp32"}
        measurements = {"edge-arm": {"p50_ms": y, "predicted": i == 0}, "cpu": {"p50_ms": 1.0}}
        (d / "manifest.json").write_text(json.dumps(
            {"format": "paretoforge-artifact/1", "key": f"{i:016x}", "metrics": {}, "files": {},
             "config": cfg, "graph": {**graph, "node_count": 100 + i},
             "measurements": measurements}))
    p = LatencyPredictor.from_run_dirs([tmp_path / "run"], "edge-arm")
    assert p.n_samples == 11  # the predicted one is not a measurement
    assert p.is_ready and p.predict(features_from({"graph": graph}))[1] is True
    assert LatencyPredictor.from_run_dirs([tmp_path / "run"], "gpu-fp16").n_samples == 0
