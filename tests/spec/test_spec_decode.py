"""The spec's per-token decode latency: a decoder task's objective, on onnxruntime profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paretoforge.exceptions import SpecError
from paretoforge.spec import DECODE_METRICS, Spec, parse_metric
from paretoforge.testing.specs import tiny_spec_dict


def _decoder_spec(tmp_path: Path, metric: str, **top) -> dict:
    ckpt = tmp_path / "llama"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (ckpt / "model.safetensors").write_bytes(b"")  # the spec reads only the config
    return {"name": "dec", "model": {"path": str(ckpt)},
            "task": {"name": "causal-lm"}, "space": {"preset": "decoder-prune"},
            "objectives": [{"metric": "perplexity", "direction": "minimize"},
                           {"metric": metric, "direction": "minimize"}],
            "profiles": ["cpu-1t"], **top}


def test_decode_ms_per_token_is_a_decoder_objective(tmp_path) -> None:
    assert DECODE_METRICS == ("decode_ms_per_token", "peak_memory_mb")
    assert parse_metric("decode_ms_per_token@cpu-1t") == ("decode_ms_per_token", "cpu-1t")
    spec = Spec.from_dict(_decoder_spec(tmp_path, "decode_ms_per_token@cpu-1t"))
    assert spec.objectives[1].metric == "decode_ms_per_token@cpu-1t"
    # the prefill of one block stays an objective too
    Spec.from_dict(_decoder_spec(tmp_path, "latency_p50_ms@cpu-1t"))


@pytest.mark.parametrize("metric, match", [
    ("decode_ms_per_token", "needs the profile"),
    ("decode_ms_per_token@cpu", "not in profiles"),
])
def test_a_decode_metric_names_a_measured_profile(tmp_path, metric, match) -> None:
    with pytest.raises(SpecError, match=match):
        Spec.from_dict(_decoder_spec(tmp_path, metric))


def test_a_decode_metric_needs_a_decoder_task() -> None:
    d = tiny_spec_dict(objectives=[{"metric": "accuracy", "direction": "maximize"},
                                   {"metric": "decode_ms_per_token@cpu-1t",
                                    "direction": "minimize"}])
    with pytest.raises(SpecError, match="exports no KV-cache decoder.*causal-lm"):
        Spec.from_dict(d)


def test_a_decode_metric_needs_an_onnxruntime_profile(tmp_path) -> None:
    d = _decoder_spec(tmp_path, "decode_ms_per_token@cpu-torch-dec",
                      hardware=[{"name": "cpu-torch-dec", "device": "cpu",
                                 "runtime": "torch-eager", "precisions": ["fp32", "int8"]}],
                      profiles=["cpu-torch-dec"])
    with pytest.raises(SpecError, match="runs torch-eager.*onnxruntime profile"):
        Spec.from_dict(d)


def test_peak_memory_is_a_decoder_objective_on_cpu_profiles(tmp_path) -> None:
    assert parse_metric("peak_memory_mb@cpu-1t") == ("peak_memory_mb", "cpu-1t")
    spec = Spec.from_dict(_decoder_spec(tmp_path, "peak_memory_mb@cpu-1t"))
    assert spec.objectives[1].metric == "peak_memory_mb@cpu-1t"
    with pytest.raises(SpecError, match="exports no KV-cache decoder"):
        Spec.from_dict(tiny_spec_dict(objectives=[
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "peak_memory_mb@cpu-1t", "direction": "minimize"}]))
    d = _decoder_spec(tmp_path, "peak_memory_mb@gpu-dec",
                      hardware=[{"name": "gpu-dec", "device": "cuda",
                                 "provider": "CUDAExecutionProvider",
                                 "precisions": ["fp32", "int8"]}],
                      profiles=["gpu-dec"])
    with pytest.raises(SpecError, match="runs on cuda.*peak_memory_mb@cpu-1t"):
        Spec.from_dict(d)
