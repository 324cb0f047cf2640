"""Per-token decode latency of KV-cache decoder graphs: feeds, the protocol, the spec's names.

Two real graphs of different cache layouts (a 2-layer Llama with 2 key/value groups and a
pruned 1-layer one with 1 group), timed one beside the other as a candidate and its reference
are: each is fed a past in its own layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from paretoforge.evaluators import measure_latency
from paretoforge.evaluators.inputs import make_decode_feeds
from paretoforge.evaluators.quality import onnx_logits
from paretoforge.exceptions import MeasurementError
from paretoforge.hw_profiles import HardwareProfile, get_profile
from paretoforge.kernels.decoder_export import (
    CacheLayout,
    complete_feeds,
    decode_step_feeds,
    export_decoder_onnx,
    prefill_feeds,
)
from paretoforge.kernels.runtime import OrtRuntime, placement_report

VOCAB = 61
PAST = 12


def _llama(layers: int, kv_heads: int) -> torch.nn.Module:
    import transformers

    torch.manual_seed(layers)
    config = transformers.LlamaConfig(
        hidden_size=24, num_hidden_layers=layers, num_attention_heads=2 * kv_heads,
        num_key_value_heads=kv_heads, head_dim=6, intermediate_size=40, vocab_size=VOCAB,
        max_position_embeddings=64, tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, CacheLayout]]:
    d = tmp_path_factory.mktemp("decode")
    out = {}
    for name, (layers, kv) in {"base": (2, 2), "pruned": (1, 1)}.items():
        model = _llama(layers, kv)
        layout = export_decoder_onnx(model, d / f"{name}.onnx")
        out[name] = (d / f"{name}.onnx", layout, model)
    return out


@pytest.fixture(scope="module")
def blocks() -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(0, VOCAB, (6, PAST), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def test_complete_feeds_make_a_prefill_and_a_decode_step() -> None:
    layout = CacheLayout(keys=((2, 6), (1, 6)), values=((2, 6), (1, 6)))
    ids = np.array([[3, 4, 5]])
    prefill = complete_feeds(layout, {"input_ids": ids})
    want = prefill_feeds(layout, ids)
    assert set(prefill) == set(want) == set(layout.input_names)
    for k, v in want.items():
        assert prefill[k].shape == v.shape and prefill[k].dtype == v.dtype
        np.testing.assert_array_equal(prefill[k], v)
    step = complete_feeds(layout, {"input_ids": np.array([[7]]),
                                   "attention_mask": np.ones((1, 9), dtype=np.int64)})
    assert step["position_ids"].tolist() == [[8]]
    assert step["past_key_values.1.value"].shape == (1, 1, 8, 6)
    assert float(np.abs(step["past_key_values.0.key"]).sum()) > 0  # a filled past
    given = np.zeros((1, 2, 8, 6), np.float32)
    kept = complete_feeds(layout, {**step, "past_key_values.0.key": given})
    assert kept["past_key_values.0.key"] is given  # what is given is kept
    with pytest.raises(MeasurementError, match="narrower than input_ids"):
        complete_feeds(layout, {"input_ids": ids, "attention_mask": np.ones((1, 2), np.int64)})
    with pytest.raises(MeasurementError, match="needs input_ids"):
        complete_feeds(layout, {"attention_mask": np.ones((1, 2), np.int64)})
    assert CacheLayout.from_dict(layout.as_dict()) == layout


def test_make_decode_feeds_take_real_tokens_after_the_past(blocks) -> None:
    p = HardwareProfile(name="t2", device="cpu", batch_size=2, sequence_length=4)
    feeds, info = make_decode_feeds(blocks, p, past=PAST + 3)
    assert len(feeds) == 3 and info["mode"] == "decode" and info["past"] == PAST + 3
    first = feeds[0]
    assert first["input_ids"].tolist() == [[blocks["input_ids"][0, 3]],
                                            [blocks["input_ids"][1, 3]]]
    assert first["attention_mask"].shape == (2, PAST + 4)  # not the profile's sequence_length
    assert first["position_ids"].tolist() == [[PAST + 3], [PAST + 3]]
    with pytest.raises(MeasurementError, match="at least 1 token"):
        make_decode_feeds(blocks, p, past=0)
    with pytest.raises(MeasurementError, match="input_ids"):
        make_decode_feeds({"pixel_values": np.zeros((2, 3))}, p, past=4)


def test_token_inputs_run_a_decoder_graph_as_a_prefill(graphs, blocks) -> None:
    path, layout, model = graphs["pruned"]
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(blocks["input_ids"])).logits.numpy()
    np.testing.assert_allclose(onnx_logits(path, blocks, batch_size=4), want, atol=1e-4)
    rt = OrtRuntime(path, get_profile("cpu-1t"))
    assert rt.cache_layout == layout
    rt.validate(blocks, 1)
    np.testing.assert_allclose(rt.run(blocks)[0], want, atol=1e-4)
    report = placement_report(path, get_profile("cpu-1t"), blocks)
    assert report["nodes_after"] > 0 and placement_report(path, get_profile("cpu-1t"))


def test_a_decode_step_is_timed_beside_a_reference_of_another_layout(graphs, blocks) -> None:
    cand, ref = graphs["pruned"][0], graphs["base"][0]
    assert graphs["pruned"][1] != graphs["base"][1]
    m = measure_latency(cand, get_profile("cpu-1t"), blocks, reference=ref, decode_past=PAST,
                        rounds=2, max_rounds=2, min_runs=5, max_seconds=0.2, warmup=2)
    assert m.env["inputs"]["mode"] == "decode" and m.env["inputs"]["past"] == PAST
    assert m.rel_p50 is not None and m.rel_p50 > 0 and len(m.rel_rounds) == 2
    assert m.ref_p50_ms is not None and m.p50_ms > 0
    # the same graph as its own reference: one decode step costs what it costs
    same = measure_latency(ref, get_profile("cpu-1t"), blocks, reference=ref,
                           decode_past=PAST, rounds=2, max_rounds=2, min_runs=5,
                           max_seconds=0.2, warmup=2)
    assert 0.3 < same.rel_p50 < 3.0


def test_a_decode_step_needs_a_decoder_graph_and_onnxruntime(graphs, blocks,
                                                            eval_onnx) -> None:
    with pytest.raises(MeasurementError, match="not a KV-cache decoder graph"):
        measure_latency(eval_onnx, get_profile("cpu-1t"), blocks, decode_past=PAST,
                        rounds=1, max_rounds=1, min_runs=2, max_seconds=0.05)
    torch_profile = HardwareProfile(name="t-torch", device="cpu", runtime="torch-eager")
    with pytest.raises(MeasurementError, match="needs an onnxruntime profile"):
        measure_latency(graphs["base"][2], torch_profile, blocks, decode_past=PAST)


def test_decode_step_feeds_and_complete_feeds_agree(graphs) -> None:
    _, layout, _ = graphs["base"]
    fixed = decode_step_feeds(layout, PAST)
    done = complete_feeds(layout, {k: fixed[k] for k in ("input_ids", "attention_mask")})
    assert {k: v.shape for k, v in done.items()} == {k: v.shape for k, v in fixed.items()}


def test_peak_memory_is_recorded_and_grows_with_the_model(graphs, tmp_path: Path) -> None:
    import transformers

    from paretoforge.evaluators.memory import session_peak_memory
    from paretoforge.pipeline.stages import measure

    small, _, _ = graphs["pruned"]
    torch.manual_seed(0)
    config = transformers.LlamaConfig(  # ~4.3M parameters: 17 MB of fp32 weights
        hidden_size=256, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=640, vocab_size=2000, max_position_embeddings=128,
        tie_word_embeddings=False)
    big_model = transformers.LlamaForCausalLM(config).eval()
    weight_mb = sum(p.numel() for p in big_model.parameters()) * 4 / 2**20
    big = tmp_path / "big.onnx"
    export_decoder_onnx(big_model, big)

    def timing(path, profile, samples, *, precision, decode_past=None):  # timing is not
        return {"p50_ms": 1.0, "p90_ms": 1.0, "mean_ms": 1.0}  # what this test is about

    measured = {}
    for name, path in (("small", small), ("big", big)):
        out = measure(path, ["cpu-1t"], {}, timing, decode_past=PAST)
        mem = out.measurements["cpu-1t"]["memory"]
        assert out.metrics["peak_memory_mb@cpu-1t"] == mem["peak_mb"]
        assert mem["prompt_tokens"] == PAST and "VmHWM" in mem["method"]
        assert mem["peak_mb"] >= mem["session_mb"] >= 0
        measured[name] = mem["peak_mb"]
    # the session holds the weights at least once: the big model's peak is over them
    assert measured["big"] > measured["small"] + 0.8 * weight_mb
    assert session_peak_memory(big, prompt_tokens=4, decode_tokens=0)["peak_mb"] > weight_mb / 2
