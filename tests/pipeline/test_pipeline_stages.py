"""Each stage of the build pipeline on its own, then the whole build with its stage cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paretoforge.pipeline import (
    BuildContext,
    Manifest,
    StageCache,
    build_candidate,
    prepare_cached,
    stage_key,
    verify_artifact,
)
from paretoforge.pipeline import stages as st
from paretoforge.search_spaces import CandidateConfig
from paretoforge.testing import tiny_spec


@pytest.fixture(scope="module")
def ctx() -> BuildContext:
    spec = tiny_spec()
    return BuildContext(prepare_cached(spec, log=lambda *_: None), recovery=spec.recovery,
                        seed=spec.search.seed)


def _cfg(**kw) -> CandidateConfig:
    base = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5, "precision": "fp32"}
    return CandidateConfig(**{**base, **kw})


def _fake_measurer(calls: list):
    def measure(path: Path, profile: str, samples: dict, *, precision: str) -> dict:
        calls.append((path.name, profile, len(next(iter(samples.values()))), precision))
        return {"p50_ms": 1.0, "p90_ms": 1.5, "mean_ms": 1.1, "placement": {"nodes": 1}}

    return measure


def test_stage_key_depends_on_every_part() -> None:
    a = stage_key("derive", "base", {"layers_kept": 1})
    assert a == stage_key("derive", "base", {"layers_kept": 1})
    assert a != stage_key("derive", "base", {"layers_kept": 2})
    assert a != stage_key("derive", "other", {"layers_kept": 1})
    assert a != stage_key("recover", "base", {"layers_kept": 1})


def test_derive_keeps_the_base_for_the_unpruned_config_and_shrinks_otherwise(ctx) -> None:
    full = ctx.prepared
    unpruned = st.derive(ctx, _cfg(layers_kept=full.num_layers, heads_kept=full.num_heads,
                                   ffn_kept=1.0))
    assert unpruned.model is ctx.base and not unpruned.pruned
    small = st.derive(ctx, _cfg())
    assert small.pruned and small.model is not ctx.base
    assert int(small.model.config.num_hidden_layers) == 1
    assert small.plan["neurons_per_layer"] == [ctx.base.config.intermediate_size // 2]
    # precision and fusion act later: they do not change the weights' key
    assert st.derive(ctx, _cfg(precision="int8", fusion=True)).key == small.key


def test_recover_trains_the_student_and_its_key_follows_the_recipe(ctx) -> None:
    import torch

    derived = st.derive(ctx, _cfg())
    before = {k: v.clone() for k, v in derived.model.state_dict().items()}
    recovered = st.recover(ctx, derived)
    after = recovered.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert recovered.key == st.recover_key(ctx, derived.key) != derived.key
    other = BuildContext(ctx.prepared, recovery=ctx.recovery.model_copy(update={"epochs": 2}),
                         seed=ctx.seed)
    assert st.recover_key(other, derived.key) != recovered.key


def test_a_resumed_recovery_continues_the_rung_before(ctx, tmp_path: Path) -> None:
    """ASHA's resume: a finishing trial of E epochs after one of E' starts from that trial's
    saved weights and trains the E - E' epochs still missing."""
    import torch

    from paretoforge.exceptions import BuildError
    from paretoforge.models.distill import distill
    from paretoforge.models.io import load_weights_bytes, save_pretrained

    rung0 = ctx.with_recovery_epochs(1)
    first = st.recover(rung0, st.derive(rung0, _cfg()))
    save_pretrained(first.model, tmp_path / "r1")
    saved = (tmp_path / "r1" / "model.safetensors").read_bytes()
    resume = st.Resume(key="cfgkey-r1", epochs=1, weights=saved)

    # nothing missing: exactly the saved weights, not the cut ones, and not trained further
    same = ctx.with_recovery_epochs(1, resume=resume)
    kept = st.recover(same, st.derive(same, _cfg())).model.state_dict()
    assert all(torch.equal(v, first.model.state_dict()[k]) for k, v in kept.items())

    three = ctx.with_recovery_epochs(3, resume=resume)
    derived = st.derive(three, _cfg())
    assert derived.plan["resumed_from"] == {"artifact": "cfgkey-r1", "epochs": 1}
    resumed = st.recover(three, derived)
    # the same as loading the saved weights into the cut and distilling the 2 missing epochs
    # (data order seeded seed + 1), by the recovery recipe
    student = load_weights_bytes(st.derive(ctx, _cfg()).model, saved)
    data, state = ctx.prepared.task, ctx.prepared.task_state
    options = ctx.task.distill_options(data, state, three.recovery)
    labels = options.pop("labels", None)
    r = three.recovery
    expected = distill(student, ctx.base, data.x_train, labels, epochs=2, lr=r.lr,
                       temperature=r.temperature, alpha=r.alpha, batch_size=r.batch_size,
                       seed=ctx.seed + 1, hidden_weight=r.hidden_weight, **options)
    got = resumed.model.state_dict()
    assert all(torch.allclose(v, got[k], atol=1e-6) for k, v in expected.state_dict().items())
    assert any(not torch.equal(v, first.model.state_dict()[k]) for k, v in got.items())
    # its key differs from a 3-epoch recovery of the cut weights
    assert resumed.key != st.recover_key(ctx.with_recovery_epochs(3), derived.key)

    # weights of another shape: a clear error naming the artifact
    other = ctx.with_recovery_epochs(3, resume=resume)
    with pytest.raises(BuildError, match="cfgkey-r1"):
        st.recover(other, st.derive(other, _cfg(ffn_kept=1.0)))


def test_export_then_passes_give_a_graph_that_matches_torch(ctx, tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    weights = st.derive(ctx, _cfg())
    exported = st.export(ctx, weights, tmp_path)
    assert {"model.safetensors", "config.json", "model_fp32.onnx"} <= {
        p.name for p in tmp_path.iterdir()}
    assert exported.output["name"] == "logits"
    graph = st.passes(ctx, exported, _cfg(), tmp_path / "model.onnx")
    assert graph.fusions == {} and graph.path.is_file()
    x = ctx.prepared.feeds("heldout")["pixel_values"][:4]
    sess = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixel_values": x})[0]
    with torch.no_grad():
        want = weights.model(pixel_values=torch.from_numpy(x)).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    import onnx

    int8 = st.passes(ctx, exported, _cfg(precision="int8"), tmp_path / "model_int8.onnx")
    ops = {n.op_type for n in onnx.load(str(int8.path)).graph.node}
    assert int8.key != graph.key and {"DynamicQuantizeLinear", "MatMulInteger"} & ops


def test_score_is_the_tasks_metric_on_the_heldout_split(ctx, tmp_path: Path) -> None:
    full = ctx.prepared
    cfg = _cfg(layers_kept=full.num_layers, heads_kept=full.num_heads, ffn_kept=1.0)
    exported = st.export(ctx, st.derive(ctx, cfg), tmp_path)
    graph = st.passes(ctx, exported, cfg, tmp_path / "model.onnx")
    # the unpruned fp32 graph scores what the base scored in PyTorch
    assert st.score(ctx, graph.path) == pytest.approx(full.base_info["heldout_accuracy"],
                                                      abs=1e-3)


def test_measure_names_each_profiles_metrics_and_keeps_placement(tmp_path: Path) -> None:
    calls: list = []
    out = st.measure(tmp_path / "model.onnx", ["a", "b"], {"x": np.zeros((3, 2))},
                     _fake_measurer(calls))
    assert [c[1] for c in calls] == ["a", "b"]
    assert out.metrics["latency_p50_ms@a"] == 1.0 and out.metrics["latency_p90_ms@b"] == 1.5
    assert out.placement["a"] == {"nodes": 1} and "placement" not in out.measurements["a"]


def test_a_build_writes_a_verified_manifest_and_reuses_weights_across_precisions(
        ctx, tmp_path: Path) -> None:
    cache = StageCache()
    calls: list = []
    fp32 = build_candidate(ctx, _cfg(), run_dir=tmp_path, profiles=["p"],
                           measurer=_fake_measurer(calls), cache=cache)
    assert isinstance(fp32, Manifest) and verify_artifact(tmp_path / "artifacts" / fp32.key)
    names = [s.name for s in fp32.stages]
    assert names == ["derive", "recover", "export", "passes", "score", "measure"]
    assert not any(s.cached for s in fp32.stages)
    assert {"surgery_s", "recovery_s", "export_s", "quality_s", "measure_s",
            "total_s"} <= set(fp32.timings)

    int8 = build_candidate(ctx, _cfg(precision="int8"), run_dir=tmp_path,
                           profiles=["p"], measurer=_fake_measurer(calls), cache=cache)
    cached = {s.name: s.cached for s in int8.stages}
    assert cached["recover"] and cached["export"] and not cached["passes"]
    by_name = {s.name: s for s in int8.stages}
    assert by_name["recover"].key == {s.name: s for s in fp32.stages}["recover"].key
    assert int8.key != fp32.key and verify_artifact(tmp_path / "artifacts" / int8.key)
    # every candidate is timed on the same seeded inputs
    assert int8.latency_inputs == fp32.latency_inputs and fp32.latency_inputs["n"] > 0
    # the same weights: the int8 graph is the fp32 one quantized
    assert int8.metrics["params"] == fp32.metrics["params"]
    assert int8.metrics["onnx_bytes"] != fp32.metrics["onnx_bytes"]

    # without a cache the same build retrains and gives the same quality (deterministic)
    again = build_candidate(ctx, _cfg(precision="int8"), run_dir=tmp_path / "b",
                            profiles=["p"], measurer=_fake_measurer(calls))
    assert not any(s.cached for s in again.stages)
    assert again.metrics["accuracy"] == pytest.approx(int8.metrics["accuracy"], abs=1e-9)


def test_a_failed_build_leaves_no_artifact(ctx, tmp_path: Path) -> None:
    from paretoforge.exceptions import BuildError

    with pytest.raises(BuildError, match="int8-static"):
        build_candidate(ctx, _cfg(precision="int8-static", fusion=True), run_dir=tmp_path,
                        profiles=[], measurer=_fake_measurer([]))
    assert not any((tmp_path / "artifacts").iterdir())


def test_measure_ranks_by_the_drift_free_median_and_keeps_the_absolute() -> None:
    def measurer(path, profile, samples, *, precision):
        rec = {"p50_ms": 2.0, "p90_ms": 2.5, "mean_ms": 2.1, "placement": {}}
        if profile == "cpu":  # measured against the reference: relative x base latency
            rec.update(rel_p50=0.5, base_p50_ms=3.0, drift_free_p50_ms=1.5)
        return rec

    out = st.measure(Path("m.onnx"), ["cpu", "cpu-1t"], {"x": np.zeros((1, 1))}, measurer)
    assert out.metrics["latency_p50_ms@cpu"] == 1.5
    assert out.metrics["latency_p50_abs_ms@cpu"] == 2.0
    # without a reference the ranked figure is the absolute one
    assert out.metrics["latency_p50_ms@cpu-1t"] == out.metrics["latency_p50_abs_ms@cpu-1t"]
    assert out.measurements["cpu"]["rel_p50"] == 0.5


def test_reference_artifact_is_the_base_built_once_per_run(ctx, tmp_path: Path) -> None:
    import onnxruntime as ort

    ref = st.reference_artifact(ctx, tmp_path)
    assert ref == tmp_path / "reference" / ctx.prepared.base_key
    assert {f.name for f in ref.iterdir()} >= set(st.ARTIFACT_FILES)
    mtime = (ref / "model.onnx").stat().st_mtime_ns
    assert st.reference_artifact(ctx, tmp_path) == ref  # found, not rebuilt
    assert (ref / "model.onnx").stat().st_mtime_ns == mtime
    # it is the unpruned base: the same outputs as the base model in torch
    import torch

    x = {k: v[:2] for k, v in ctx.prepared.feeds("heldout").items()}
    sess = ort.InferenceSession(str(ref / "model.onnx"), providers=["CPUExecutionProvider"])
    head = ctx.task.export_head(ctx.base, ctx.prepared.task_state, ctx.prepared.task)
    with torch.no_grad():
        want = head.module(**{k: torch.from_numpy(v) for k, v in x.items()})
    from paretoforge.kernels.export import default_output_fn

    want = default_output_fn(want)
    np.testing.assert_allclose(sess.run(None, x)[0], want.numpy(), atol=1e-4)


def test_stage_caches_of_gone_processes_are_swept(tmp_path: Path) -> None:
    """A cache folder is named after its process; one whose process is gone is removed, one
    of a live process (or of no process id) is kept."""
    import os
    import subprocess
    import sys

    from paretoforge.pipeline.cache import sweep_stale_caches

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"pf-stage-cache-{gone.pid}-abc"
    mine = tmp_path / f"pf-stage-cache-{os.getpid()}-def"
    other = tmp_path / "pf-stage-cache-xyz"
    for d in (dead, mine, other):
        (d / "k").mkdir(parents=True)
        (d / "k" / "model.onnx").write_bytes(b"x" * 10)
    assert sweep_stale_caches(tmp_path) == 1
    assert not dead.exists() and mine.exists() and other.exists()
    cache = StageCache()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("1")
    cache.put_export("e", src)
    root = cache.get_export("e")[0].parent
    assert root.name.startswith(f"pf-stage-cache-{os.getpid()}-")
    cache.clear()
    assert not root.exists()
