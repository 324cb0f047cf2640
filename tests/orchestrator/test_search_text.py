"""A search of a user's own Hugging Face checkpoint: a tiny random BERT with an offline tokenizer.

One embedding-fidelity search and one text-classification search run end to end on the
session's Ray cluster; the spec errors for a bad ``model.path`` come before any Ray work.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from paretoforge.exceptions import SpecError
from paretoforge.names import TrialAttr
from paretoforge.spec import Spec

_WORDS = ("the a of to and in is it for that with as on be this are by or not from an "
          "good bad great awful fine love hate movie film plot").split()


def make_tiny_bert(directory: Path, *, classes: int | None = None) -> Path:
    """Save a random 2-layer, 2-head BERT and a WordPiece tokenizer built from a small vocab."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        BertTokenizerFast,
    )

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.punctuation, *string.digits,
             *string.ascii_lowercase, *(f"##{c}" for c in string.ascii_lowercase + string.digits),
             *_WORDS]
    vocab = list(dict.fromkeys(vocab))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(str(directory))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    if classes is None:
        model: Any = BertModel(config)
    else:
        config.num_labels = classes
        model = BertForSequenceClassification(config)
    model.save_pretrained(str(directory))
    return directory


def _spec(ckpt: Path, task: dict[str, Any], quality: str) -> dict[str, Any]:
    return {
        "name": "tiny-text",
        "model": {"path": str(ckpt)},
        "task": task,
        "space": {"preset": "encoder-prune",
                  "dimensions": {"ffn_kept": [0.5, 1.0],
                                 "precision": ["fp32", "int8", "int8-static"]}},
        "recovery": {"epochs": 1, "batch_size": 16},
        "objectives": [{"metric": quality, "direction": "maximize"},
                       {"metric": "latency_p50_ms@cpu-1t", "direction": "minimize"}],
        "profiles": ["cpu-1t"],
        "search": {"trials": 4, "population_size": 4, "seed": 0, "strategy": "per-candidate"},
        "cluster": {"workers": 2},
    }


def _run(spec: Spec, run_dir: Path) -> Any:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress

    return run_search(spec, run_dir, progress=Progress(4, live=False, quiet=True))


def test_embedding_fidelity_search_of_a_local_checkpoint(ray_cluster, tmp_path) -> None:
    from paretoforge.orchestrator.results import load_run

    ckpt = make_tiny_bert(tmp_path / "bert")
    # sentence-transformers' layout: the pooling config sits in a subfolder
    (ckpt / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"}]))
    (ckpt / "1_Pooling").mkdir()
    (ckpt / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    spec = Spec.from_dict(_spec(ckpt, {"name": "embedding-fidelity", "params": {
        "n_heldout": 16, "n_train": 48, "max_length": 16}}, "embedding_cosine"))
    summary = _run(spec, tmp_path / "run")
    assert summary.completed == 4 and summary.failed == 0
    run = load_run(tmp_path / "run")
    base = run.trial(0)
    assert base.params == {"layers_kept": 2, "heads_kept": 2, "ffn_kept": 1.0,
                           "precision": "fp32"}
    assert base.values[0] == pytest.approx(1.0, abs=1e-4)  # the unpruned model is the reference
    for t in run.trials():
        assert 0.0 < t.values[0] <= 1.0 + 1e-6
        assert t.params["heads_kept"] in (2,) and t.params["layers_kept"] in (1, 2)
    art = tmp_path / "run" / base.user_attrs[TrialAttr.ARTIFACT_DIR]
    manifest = json.loads((art / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["inputs"][0]["dtype"] == "int64"
    assert manifest["outputs"][0]["name"] == "sentence_embedding"
    assert manifest["outputs"][0]["shape"] == ["batch", 32]
    assert "vocab.txt" in manifest["files"] and (art / "tokenizer.json").is_file()
    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.ones((3, 16), np.int64)
    out = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert out.shape == (3, 32)
    from paretoforge.orchestrator.results import export_trial

    exported = export_trial(run, 0, tmp_path / "export")
    assert (exported / "1_Pooling" / "config.json").is_file()  # subfolders of side files too
    assert (exported / "tokenizer.json").is_file() and (exported / "model.onnx").is_file()


def test_text_classification_search_of_a_local_checkpoint(ray_cluster, tmp_path) -> None:
    ckpt = make_tiny_bert(tmp_path / "bert", classes=2)
    rows = ["text,label"] + [f"{w} movie {w},{int(w in ('good', 'great', 'love', 'fine'))}"
                             for w in ("good", "bad", "great", "awful", "love", "hate", "fine",
                                       "the")] * 6
    data = tmp_path / "reviews.csv"
    data.write_text("\n".join(rows) + "\n")
    spec = Spec.from_dict(_spec(ckpt, {"name": "text-classification", "data": str(data),
                                       "params": {"max_length": 8}}, "accuracy"))
    summary = _run(spec, tmp_path / "run")
    assert summary.completed == 4 and summary.failed == 0
    assert all(0.0 <= m.objectives["accuracy"] <= 1.0 for m in summary.front)


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "has no config.json"),
        (lambda d: _config_only(d, "bert", weights=False), "no *.safetensors"),
        (lambda d: _config_only(d, "t5"), "model_type 't5', which is not supported; "
                                          "supported: gpt2, llama, mistral, qwen2, qwen3, "
                                          "bert, distilbert, roberta, vit, deit"),
    ],
)
def test_model_path_errors_are_one_line_before_ray(tmp_path, make, expect) -> None:
    path = make(tmp_path)
    with pytest.raises(SpecError) as err:
        Spec.from_dict({"model": {"path": str(path)}, "task": {"name": "embedding-fidelity"},
                        "objectives": [{"metric": "embedding_cosine", "direction": "maximize"}]})
    msg = str(err.value)
    assert expect in msg and "\n" not in msg and str(path) in msg


def _config_only(d: Path, model_type: str, *, weights: bool = True) -> Path:
    ckpt = d / model_type
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": model_type}))
    if weights:
        (ckpt / "model.safetensors").write_bytes(b"")
    return ckpt


def test_search_in_a_user_declared_yaml_space(ray_cluster, tiny_spec_dict, tmp_path) -> None:
    """``space: {preset: null, dimensions: {...}}`` in YAML: every trial stays inside it."""
    import yaml

    from paretoforge.orchestrator.results import load_run

    declared = {"layers_kept": [1, 2], "heads_kept": [2], "ffn_kept": [0.5, 1.0],
                "precision": ["fp32", "int8-static"]}
    d = dict(tiny_spec_dict, space={"preset": None, "dimensions": declared},
             search={"trials": 4, "population_size": 4, "seed": 1,
                     "strategy": "per-candidate"})
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(d))
    spec = Spec.from_file(path)
    assert spec.space.preset is None
    summary = _run(spec, tmp_path / "run")
    assert summary.completed == 4 and summary.failed == 0
    trials = load_run(tmp_path / "run").trials()
    assert len(trials) == 4
    for t in trials:
        assert set(t.params) == set(declared)
        for name, value in t.params.items():
            assert value in declared[name], (name, value)
