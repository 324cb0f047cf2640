"""The built-in decoder recipe: trained once on the training documents, cached, loadable."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

from paretoforge.models.tiny_llama import DEFAULT_TINY_LLAMA, tiny_llama_checkpoint


def test_recipe_key_follows_the_recipe() -> None:
    assert DEFAULT_TINY_LLAMA.key == dataclasses.replace(DEFAULT_TINY_LLAMA).key
    assert DEFAULT_TINY_LLAMA.key != dataclasses.replace(DEFAULT_TINY_LLAMA, seed=1).key


@pytest.mark.slow
def test_a_short_recipe_trains_once_caches_and_loads(tmp_path) -> None:
    import transformers

    from paretoforge.tasks import load_task
    from paretoforge.tasks.causal_lm import perplexity

    recipe = dataclasses.replace(DEFAULT_TINY_LLAMA, steps=30, num_layers=2, vocab_size=400)
    path = tiny_llama_checkpoint(recipe, tmp_path)
    info = json.loads((path / "info.json").read_text())
    assert info["recipe"] == recipe.to_dict() and info["train_documents"] > 0
    t0 = time.perf_counter()
    assert tiny_llama_checkpoint(recipe, tmp_path) == path  # cached: no training
    assert time.perf_counter() - t0 < 1.0
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    assert model.config.num_key_value_heads == 2 and model.config.num_attention_heads == 4
    data = load_task("causal-lm", checkpoint=str(path), max_heldout_blocks=4)
    assert data.split["n_train_documents"] == info["train_documents"]  # the same split
    ids = torch.from_numpy(data.x_heldout["input_ids"])
    with torch.no_grad():
        ppl = perplexity(model(input_ids=ids).logits.numpy(), ids.numpy())
    assert ppl < 0.5 * len(transformers.AutoTokenizer.from_pretrained(path))  # it learned
