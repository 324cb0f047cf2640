"""Per-layer candidates and custom dimensions through the stages: each acts at its stage,
and changes that stage's key and those after it, never the ones before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paretoforge.exceptions import BuildError
from paretoforge.pipeline import BuildContext, StageCache, build_candidate, prepare_cached
from paretoforge.pipeline import stages as st
from paretoforge.search_spaces import DIMENSIONS, CandidateConfig, Dimension, register_dimension
from paretoforge.testing import tiny_spec


@pytest.fixture(scope="module")
def ctx() -> BuildContext:
    spec = tiny_spec()
    return BuildContext(prepare_cached(spec, log=lambda *_: None), recovery=spec.recovery,
                        seed=spec.search.seed)


@pytest.fixture(autouse=True)
def restored():
    items = dict(DIMENSIONS._items)
    yield
    DIMENSIONS._items.clear()
    DIMENSIONS._items.update(items)


def _cfg(**kw) -> CandidateConfig:
    base = {"layers_kept": 2, "heads_kept": (1, 2), "ffn_kept": (0.5, 1.0), "precision": "fp32"}
    return CandidateConfig(**{**base, **kw})


def _measurer(path: Path, profile: str, samples: dict, *, precision: str) -> dict:
    return {"p50_ms": 1.0, "p90_ms": 1.5, "mean_ms": 1.1, "placement": {}}


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixel_values": x})[0]


def test_a_per_layer_candidate_builds_with_its_shapes_fused_or_not(ctx, tmp_path: Path) -> None:
    import torch

    m = build_candidate(ctx, _cfg(), run_dir=tmp_path, profiles=["p"], measurer=_measurer)
    width = ctx.base.config.intermediate_size
    assert [len(h) for h in m.plan["heads"]] == [1, 2]
    assert m.plan["neurons_per_layer"] == [width // 2, width]
    assert m.config["heads_kept"] == [1, 2] and m.config["ffn_kept"] == [0.5, 1.0]
    derived = st.derive(ctx, _cfg())
    assert derived.key != st.derive(ctx, _cfg(heads_kept=(2, 1))).key
    assert derived.key != st.derive(ctx, _cfg(heads_kept=1, ffn_kept=0.5)).key
    exported = st.export(ctx, derived, tmp_path / "e")
    x = ctx.prepared.feeds("heldout")["pixel_values"][:4]
    plain = st.passes(ctx, exported, _cfg(), tmp_path / "e" / "plain.onnx")
    fused = st.passes(ctx, exported, _cfg(fusion=True), tmp_path / "e" / "fused.onnx")
    with torch.no_grad():
        want = derived.model(pixel_values=torch.from_numpy(x)).logits.numpy()
    np.testing.assert_allclose(_outputs(plain.path, x), want, atol=1e-4)
    np.testing.assert_allclose(_outputs(fused.path, x), want, atol=1e-4)
    assert fused.key != plain.key


def _mark(model, value):
    model.config.pf_mark = value
    return model


def test_a_derive_dimension_changes_the_weights_key(ctx) -> None:
    register_dimension(Dimension(name="mark", choices=("none", "a"), stage="derive",
                                 apply=_mark))
    plain, marked = st.derive(ctx, _cfg()), st.derive(ctx, _cfg(custom={"mark": "a"}))
    assert marked.model.config.pf_mark == "a" and not hasattr(plain.model.config, "pf_mark")
    assert marked.key != plain.key
    full = {"layers_kept": 2, "heads_kept": 2, "ffn_kept": 1.0}
    # on the unpruned config the dimension acts on a copy: the shared base is untouched
    base_marked = st.derive(ctx, _cfg(**full, custom={"mark": "a"}))
    assert base_marked.pruned and base_marked.model is not ctx.base
    assert not hasattr(ctx.base.config, "pf_mark")
    assert st.derive(ctx, _cfg(**full)).model is ctx.base


def test_an_export_dimension_keeps_the_recovered_weights(ctx, tmp_path: Path) -> None:
    register_dimension(Dimension(name="export_mark", choices=("none", "b"), stage="export",
                                 apply=_mark))
    cache = StageCache()
    a = build_candidate(ctx, _cfg(), run_dir=tmp_path, profiles=["p"], measurer=_measurer,
                        cache=cache)
    b = build_candidate(ctx, _cfg(custom={"export_mark": "b"}), run_dir=tmp_path,
                        profiles=["p"], measurer=_measurer, cache=cache)
    sa, sb = ({s.name: s for s in m.stages} for m in (a, b))
    assert sa["recover"].key == sb["recover"].key and sb["recover"].cached
    assert sa["export"].key != sb["export"].key and not sb["export"].cached
    import json

    config = json.loads((tmp_path / "artifacts" / b.key / "config.json").read_text())
    assert config["pf_mark"] == "b"
    assert "pf_mark" not in json.loads((tmp_path / "artifacts" / a.key / "config.json")
                                       .read_text())
    assert b.config["custom"] == {"export_mark": "b"} and "custom" not in a.config


def _doc(src, dst, value):
    import onnx

    model = onnx.load(str(src))
    model.doc_string = f"doc={value}"
    onnx.save(model, str(dst))


def test_a_passes_dimension_acts_on_the_graph(ctx, tmp_path: Path) -> None:
    import onnx

    register_dimension(Dimension(name="doc", choices=(0, 7), stage="passes", apply=_doc))
    register_dimension(Dimension(name="lazy", choices=(False, True), stage="passes",
                                 apply=lambda src, dst, value: None))
    derived = st.derive(ctx, _cfg())
    exported = st.export(ctx, derived, tmp_path)
    plain = st.passes(ctx, exported, _cfg(), tmp_path / "plain.onnx")
    doc = st.passes(ctx, exported, _cfg(custom={"doc": 7}), tmp_path / "doc.onnx")
    assert onnx.load(str(doc.path)).doc_string == "doc=7"
    assert doc.key != plain.key
    assert not list(tmp_path.glob("model_pass*.onnx")), "intermediate graphs are removed"
    with pytest.raises(BuildError, match="'lazy' .* wrote no graph"):
        st.passes(ctx, exported, _cfg(custom={"lazy": True}), tmp_path / "lazy.onnx")


def test_failing_or_unknown_dimensions_are_build_errors(ctx) -> None:
    def boom(model, value):
        raise RuntimeError("no")

    register_dimension(Dimension(name="boom", choices=(0, 1), stage="derive", apply=boom))
    register_dimension(Dimension(name="nothing", choices=(0, 1), stage="derive",
                                 apply=lambda model, value: None))
    with pytest.raises(BuildError, match="'boom' .* failed at value 1: RuntimeError: no"):
        st.derive(ctx, _cfg(custom={"boom": 1}))
    with pytest.raises(BuildError, match="'nothing' .* returned None"):
        st.derive(ctx, _cfg(custom={"nothing": 1}))
    with pytest.raises(BuildError, match="'gone' is not registered here"):
        st.derive(ctx, _cfg(custom={"gone": 1}))
