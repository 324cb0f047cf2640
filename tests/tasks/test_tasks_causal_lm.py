"""The causal-lm task: documents split before packing, full blocks, perplexity from ONNX logits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from paretoforge.exceptions import SpecError
from paretoforge.tasks import TASKS, load_task
from paretoforge.tasks.causal_lm import (
    next_token_accuracy,
    perplexity,
    pydoc_documents,
    split_documents,
)


def make_tiny_llama(directory: Path, *, layers: int = 2) -> Path:
    """A random tiny Llama (GQA 4:2) and a byte-level BPE tokenizer trained on pydoc text."""
    import transformers

    from paretoforge.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(pydoc_documents()[:12], vocab_size=300)
    tok.save_pretrained(str(directory))
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=48, max_position_embeddings=128,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("llama"))


def test_registered_with_its_metrics_and_families() -> None:
    task = TASKS.get("causal-lm")
    assert task.quality_metric == "perplexity" and task.direction("perplexity") == "minimize"
    assert task.direction("next_token_accuracy") == "maximize"
    assert {"gpt2", "llama", "qwen2"} <= set(task.families)


def test_pydoc_blocks_are_full_and_the_split_shares_no_document(llama_dir) -> None:
    data = load_task("causal-lm", checkpoint=str(llama_dir), block_size=32, seed=3,
                     max_train_blocks=40, max_heldout_blocks=12)
    x, v, t = data.feeds("train"), data.feeds("validation"), data.feeds("test")
    h = {"input_ids": np.concatenate([v["input_ids"], t["input_ids"]])}
    # the 12 held-out blocks, divided into validation and test
    assert x["input_ids"].shape == (40, 32) and h["input_ids"].shape == (12, 32)
    assert len(v["input_ids"]) == len(t["input_ids"]) == 6
    assert x["input_ids"].dtype == np.int64 and (x["attention_mask"] == 1).all()
    assert (x["input_ids"] == 2).any()  # documents joined by </s>
    n = data.split["n_documents"]
    train, held = split_documents(n, 0.1, 3)
    assert not set(train) & set(held) and sorted(train + held) == list(range(n))
    assert data.split["n_heldout_documents"] == len(held)
    again = load_task("causal-lm", checkpoint=str(llama_dir), block_size=32, seed=3,
                      max_train_blocks=40, max_heldout_blocks=12)
    assert np.array_equal(again.feeds("validation")["input_ids"], v["input_ids"])
    assert np.array_equal(again.feeds("test")["input_ids"], t["input_ids"])
    other = load_task("causal-lm", checkpoint=str(llama_dir), block_size=32, seed=4,
                      max_train_blocks=40, max_heldout_blocks=12)
    assert other.split["heldout_indices_sha256"] != data.split["heldout_indices_sha256"]
    json.dumps(data.split)


def test_txt_and_jsonl_documents(tmp_path, llama_dir) -> None:
    paras = [f"Paragraph {i} says the cat sat on mat number {i} today." for i in range(20)]
    txt = tmp_path / "t.txt"
    txt.write_text("\n\n".join(paras))
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": p}) for p in paras))
    a = load_task("causal-lm", checkpoint=str(llama_dir), path=str(txt), block_size=8,
                  heldout_fraction=0.25)
    b = load_task("causal-lm", checkpoint=str(llama_dir), path=str(jsonl), block_size=8,
                  heldout_fraction=0.25, text_column="body")
    assert a.split["n_documents"] == b.split["n_documents"] == 20
    assert np.array_equal(a.x_train["input_ids"], b.x_train["input_ids"])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"path": "x.csv"}, "suffix '.csv'"),
    ({"path": "missing.txt"}, "does not exist"),
    ({"block_size": 1}, "block_size must be an integer >= 2"),
    ({"block_size": 100000}, "no full block"),
    ({"metric": "bleu"}, "metric must be one of perplexity, next_token_accuracy"),
    ({"heldout_fraction": 1.5}, "heldout_fraction"),
])
def test_bad_parameters_are_spec_errors(llama_dir, kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        load_task("causal-lm", checkpoint=str(llama_dir), **kwargs)


def test_scores_of_known_logits() -> None:
    ids = np.array([[0, 1, 2, 3]])
    uniform = np.zeros((1, 4, 5), np.float32)
    assert perplexity(uniform, ids) == pytest.approx(5.0)
    sure = np.full((1, 4, 5), -30.0, np.float32)
    for t in range(3):
        sure[0, t, ids[0, t + 1]] = 30.0
    assert perplexity(sure, ids) == pytest.approx(1.0, abs=1e-6)
    assert next_token_accuracy(sure, ids) == 1.0 and next_token_accuracy(uniform, ids) < 1.0


def test_onnx_head_scores_as_pytorch_and_importance_and_distillation_run(llama_dir,
                                                                         tmp_path) -> None:
    from paretoforge.evaluators.quality import onnx_logits
    from paretoforge.kernels.decoder_export import export_decoder_onnx
    from paretoforge.models.distill import distill
    from paretoforge.models.importance import compute_importance
    from paretoforge.models.io import load_pretrained
    from paretoforge.models.surgery import plan_from_importance, prune

    task = TASKS.get("causal-lm")
    data = load_task("causal-lm", checkpoint=str(llama_dir), block_size=16,
                     max_train_blocks=24, max_heldout_blocks=6)
    base = load_pretrained(llama_dir)
    head = task.export_head(base, {}, data)
    # the model itself, exported with a KV cache; its decode step is timed after one block
    assert head.module is base and head.decode_past == 16 and task.decoder
    assert head.output_shape == ["sequence", base.config.vocab_size]
    path = tmp_path / "m.onnx"
    export_decoder_onnx(head.module, path)
    # the decoder graph scored as a prefill of each block, as the score stage runs it
    out = onnx_logits(path, data.feeds("heldout"), batch_size=1)
    with torch.no_grad():
        ref = base(**{k: torch.from_numpy(v) for k, v in data.feeds("heldout").items()}).logits
    ppl = task.score(out, data, {})
    assert ppl == pytest.approx(perplexity(ref.numpy(), data.x_heldout["input_ids"]), rel=1e-5)
    assert 1.0 < ppl < 2 * base.config.vocab_size  # a random model: about the vocabulary size
    imp = compute_importance(base, data.feeds("train"), None, batch_size=8,
                             loss_fn=task.importance_loss({}))
    plan = plan_from_importance(imp, layers_kept=1, heads_kept=1, ffn_kept=0.5)
    student = prune(base, plan)
    options = task.distill_options(data, {}, None)
    assert options == {"labels": None}
    before = perplexity(_logits(student, data), data.x_heldout["input_ids"])
    distill(student, base, data.x_train, options["labels"], epochs=3, lr=3e-3,
            temperature=2.0, alpha=1.0, batch_size=8, hidden_weight=0.5)
    after = perplexity(_logits(student, data), data.x_heldout["input_ids"])
    assert math.isfinite(after) and after != before


def _logits(model, data) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in data.feeds("heldout").items()}
                     ).logits.numpy()
