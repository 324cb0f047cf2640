"""A causal-lm search of a tiny random Llama (GQA) checkpoint, end to end on Ray.

Every candidate keeps the same shape in every layer, so each artifact's checkpoint loads with
``AutoModelForCausalLM.from_pretrained`` and computes the logits its ONNX graph does.
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

from paretoforge.names import TrialAttr
from paretoforge.spec import Spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from test_tasks_causal_lm import make_tiny_llama  # noqa: E402


@pytest.mark.slow
def test_causal_lm_search_of_a_tiny_llama(ray_cluster, tmp_path) -> None:
    import transformers

    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.orchestrator.results import load_run

    ckpt = make_tiny_llama(tmp_path / "llama", layers=2)
    spec = Spec.from_dict({
        "name": "tiny-llama-test",
        "model": {"path": str(ckpt)},
        "task": {"name": "causal-lm", "params": {"block_size": 16, "max_train_blocks": 32,
                                                  "max_heldout_blocks": 8}},
        "space": {"preset": "decoder-prune"},
        "recovery": {"epochs": 1, "batch_size": 16},
        "objectives": [{"metric": "perplexity", "direction": "minimize"},
                       {"metric": "latency_p50_ms@cpu-1t", "direction": "minimize"}],
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
        art = tmp_path / "run" / t.user_attrs[TrialAttr.ARTIFACT_DIR]
        manifest = json.loads((art / "manifest.json").read_text())
        vocab = manifest["outputs"][0]["shape"][-1]
        assert manifest["outputs"][0]["shape"] == ["batch", 16, vocab]
        model = transformers.AutoModelForCausalLM.from_pretrained(
            art, local_files_only=True, attn_implementation="eager").eval()
        assert model.config.num_key_value_heads == t.params["heads_kept"]
        assert model.config.num_attention_heads == 2 * t.params["heads_kept"]
        ids = np.random.default_rng(0).integers(3, vocab, (1, 16))
        if t.params["precision"] == "fp32":
            sess = ort.InferenceSession(str(art / "model.onnx"),
                                        providers=["CPUExecutionProvider"])
            got = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
            with torch.no_grad():
                want = model(input_ids=torch.from_numpy(ids)).logits.numpy()
            assert np.abs(got - want).max() < 1e-4
