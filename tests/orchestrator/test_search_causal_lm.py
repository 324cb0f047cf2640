"""A causal-lm search of a tiny random Llama (GQA) checkpoint, end to end on Ray.

Every candidate keeps the same shape in every layer, so each artifact's checkpoint loads with
``AutoModelForCausalLM.from_pretrained`` and computes the logits its ONNX graph does. The
graph is the KV-cache decoder graph: scored as a prefill, timed as a prefill and as one
decode step (``decode_ms_per_token``, the second objective), and an exported front member
greedy-decodes with onnxruntime alone the tokens its PyTorch model picks.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from paretoforge.kernels.decoder_export import CacheLayout, greedy_decode, prefill_feeds
from paretoforge.names import TrialAttr
from paretoforge.spec import Spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from test_tasks_causal_lm import make_tiny_llama  # noqa: E402


@pytest.mark.slow
def test_causal_lm_search_of_a_tiny_llama(ray_cluster, tmp_path) -> None:
    import transformers

    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.orchestrator.results import export_trial, load_run

    ckpt = make_tiny_llama(tmp_path / "llama", layers=2)
    spec = Spec.from_dict({
        "name": "tiny-llama-test",
        "model": {"path": str(ckpt)},
        "task": {"name": "causal-lm", "params": {"block_size": 16, "max_train_blocks": 32,
                                                  "max_heldout_blocks": 8}},
        # fp32 only: each member's ONNX graph can then be held to its PyTorch model (int8
        # decoder graphs are tested in tests/kernels/test_decoder_export.py)
        "space": {"preset": "decoder-prune", "dimensions": {"precision": ["fp32"]}},
        "recovery": {"epochs": 1, "batch_size": 16},
        "objectives": [{"metric": "perplexity", "direction": "minimize"},
                       {"metric": "decode_ms_per_token@cpu-1t", "direction": "minimize"}],
        "profiles": ["cpu-1t"],
        "search": {"trials": 4, "population_size": 4, "seed": 0},
        "cluster": {"workers": 2},
    })
    summary = run_search(spec, tmp_path / "run", progress=Progress(4, live=False, quiet=True))
    assert summary.completed >= 4 and summary.failed == 0  # twins of a small space count too
    run = load_run(tmp_path / "run")
    base = run.trial(0)
    assert base.params["heads_kept"] == 2  # two key/value groups
    for t in run.trials():
        assert math.isfinite(t.values[0]) and t.values[0] > 1.0
        metrics = t.user_attrs[TrialAttr.METRICS]
        # per-token decode (the objective) and prefill of one block, both drift-free
        assert t.values[1] == metrics["decode_ms_per_token@cpu-1t"] > 0
        assert metrics["decode_abs_ms_per_token@cpu-1t"] > 0
        assert metrics["latency_p50_ms@cpu-1t"] > 0
        art = tmp_path / "run" / t.user_attrs[TrialAttr.ARTIFACT_DIR]
        manifest = json.loads((art / "manifest.json").read_text())
        decode = manifest["measurements"]["cpu-1t"]["decode"]
        assert decode["env"]["inputs"]["past"] == 16 and decode["rel_p50"] > 0
        assert decode["drift_free_p50_ms"] == metrics["decode_ms_per_token@cpu-1t"]
        memory = manifest["measurements"]["cpu-1t"]["memory"]  # the session's peak memory
        assert metrics["peak_memory_mb@cpu-1t"] == memory["peak_mb"] > 0
        layers = t.params["layers_kept"]
        assert manifest["cache_layout"]["kv_heads"] == [t.params["heads_kept"]] * layers
        assert [i["name"] for i in manifest["inputs"]] == manifest["cache_layout"]["inputs"]
        vocab = manifest["outputs"][0]["shape"][-1]
        assert manifest["outputs"][0]["shape"] == ["batch", "sequence", vocab]
        model = transformers.AutoModelForCausalLM.from_pretrained(
            art, local_files_only=True, attn_implementation="eager").eval()
        assert model.config.num_key_value_heads == t.params["heads_kept"]
        assert model.config.num_attention_heads == 2 * t.params["heads_kept"]
        ids = np.random.default_rng(0).integers(3, vocab, (1, 16))
        sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, prefill_feeds(CacheLayout.from_session(sess), ids))[0]
        with torch.no_grad():
            want = model(input_ids=torch.from_numpy(ids)).logits.numpy()
        assert np.abs(got - want).max() < 1e-4
    # the base's decode step is the reference's: relative latency 1 up to noise
    base_decode = json.loads((tmp_path / "run" / base.user_attrs[TrialAttr.ARTIFACT_DIR]
                              / "manifest.json").read_text())["measurements"]["cpu-1t"]["decode"]
    assert 0.5 < base_decode["rel_p50"] < 2.0

    # an exported front member (a pruned one when the front has one) generates with
    # onnxruntime alone the 32 tokens its PyTorch model picks greedily
    front = load_run(tmp_path / "run").front()
    member = next((m for m in front if m.trial != 0), front[0])
    assert member.to_json()["speedup"]["metric"] == "decode_ms_per_token@cpu-1t"
    out = export_trial(load_run(tmp_path / "run"), member.trial, tmp_path / "exported")
    prompt = [int(i) for i in run_prompt(out)]
    onnx_tokens = greedy_decode(out / "model.onnx", prompt, 32,
                                session_options={"intra_op_num_threads": 1})
    model = transformers.AutoModelForCausalLM.from_pretrained(
        out, local_files_only=True, attn_implementation="eager").eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(32):
            nxt = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
    assert onnx_tokens == ids[0, len(prompt):].tolist()


def run_prompt(artifact: Path) -> list[int]:
    """Token ids of a held-out-like prompt, with the artifact's own tokenizer."""
    from paretoforge.tasks.text import load_tokenizer

    tok = load_tokenizer(str(artifact))
    return tok("Python lists are mutable sequences", add_special_tokens=False)["input_ids"]
