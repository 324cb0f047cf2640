"""A real search: Ray actors, an Optuna journal study, real builds, exports that round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from paretoforge._io import sha256_file
from paretoforge.cli import app
from paretoforge.names import TrialAttr
from paretoforge.orchestrator.results import load_run, non_dominated


def test_exactly_the_requested_completed_trials(tiny_run) -> None:
    run_dir, summary = tiny_run
    run = load_run(run_dir)
    complete = run.trials()
    assert len(complete) == 6 == summary.completed
    assert (run_dir / "study.journal").is_file()
    # trial 0 is the enqueued unpruned fp32 base
    t0 = run.trial(0)
    assert t0.user_attrs.get(TrialAttr.IS_BASE)
    assert t0.params == {"layers_kept": 2, "heads_kept": 2, "ffn_kept": 1.0, "precision": "fp32"}
    # a config is built once: cached trials point at the artifact of an earlier trial
    keys = [t.user_attrs[TrialAttr.KEY] for t in complete
            if TrialAttr.CACHED_FROM not in t.user_attrs]
    assert len(keys) == len(set(keys))


def test_every_artifact_has_valid_checksums(tiny_run) -> None:
    run_dir, _ = tiny_run
    for d in (run_dir / "artifacts").iterdir():
        manifest = json.loads((d / "manifest.json").read_text())
        # provider placement and unfused Q/DQ counts, per measured profile
        placement = manifest["placement"]["cpu-1t"]
        assert placement["nodes_by_provider"].get("CPUExecutionProvider", 0) > 0
        assert placement["unfused_qdq"] >= 0
        for name, digest in manifest["files"].items():
            assert sha256_file(d / name) == digest
    assert not list((run_dir / "artifacts").glob(".*")), "no temporary directories left"


def test_front_is_non_dominated_and_complete(tiny_run) -> None:
    run_dir, summary = tiny_run
    run = load_run(run_dir)
    front = run.front()
    assert front, "a finished search has a front"
    dirs = [o.direction for o in run.spec.objectives]
    unique = {t.user_attrs[TrialAttr.KEY]: t for t in reversed(run.trials())}
    all_points = [tuple(t.values) for t in unique.values()]
    on_front = {tuple(all_points[i]) for i in non_dominated(all_points, dirs)}
    assert {tuple(m.objectives.values()) for m in front} == on_front
    saved = json.loads((run_dir / "front.json").read_text())
    assert [m["trial"] for m in saved] == [m.trial for m in front]


def test_front_json_cli(tiny_run) -> None:
    run_dir, _ = tiny_run
    result = CliRunner().invoke(app, ["front", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    members = json.loads(result.stdout)
    assert members
    for m in members:
        assert set(m) >= {"trial", "config", "objectives", "metrics", "artifacts",
                          "test_metrics", "quality"}
        assert "latency_p50_ms@cpu-1t" in m["metrics"]
        # validation and test quality side by side, both scored
        assert m["quality"]["metric"] == "accuracy"
        assert m["quality"]["validation"] == m["metrics"]["accuracy"]
        assert m["quality"]["test"] == m["test_metrics"]["accuracy"]
        assert 0.0 <= m["quality"]["test"] <= 1.0
        assert Path(m["artifacts"]["model.onnx"]).is_file()


def test_export_round_trip(tiny_run, tmp_path: Path) -> None:
    """The exported ONNX alone, on the held-out digits, reproduces the manifest's accuracy."""
    from sklearn.datasets import load_digits

    from paretoforge.evaluators.quality import torch_logits
    from paretoforge.models.io import load_pretrained

    run_dir, _ = tiny_run
    run = load_run(run_dir)
    member = run.front()[-1]
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--trial", str(member.trial),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    assert "latency_p50_ms@cpu-1t" in manifest["metrics"]
    assert manifest["inputs"][0]["name"] == "pixel_values"

    # Rebuild the validation and test sets from sklearn alone, with the manifest's indices and
    # preprocessing (pixels / 16 as float32, shaped (N, 1, 8, 8)).
    split = manifest["task"]["heldout_split"]
    held = np.asarray(split["heldout_indices"])
    assert len(held) == split["n_heldout"]
    test_idx = np.asarray(split["test_indices"])
    val_idx = np.setdiff1d(held, test_idx)
    assert len(val_idx) == split["n_validation"] and len(test_idx) == split["n_test"]
    assert "divided by 16" in manifest["preprocessing"]
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    # one example per call, as the manifest says quality was scored (dynamic int8 computes its
    # activation scales per call, so batching can change a prediction)
    assert manifest["quality_batch_size"] == 1

    def outputs(idx: np.ndarray) -> np.ndarray:
        return np.concatenate([sess.run(None, {"pixel_values": x[i : i + 1]})[0] for i in idx])

    def accuracy(idx: np.ndarray) -> float:
        return float((outputs(idx).argmax(1) == digits.target[idx]).mean())

    # metrics: the search's validation split; test_metrics: the test split, scored after it
    assert accuracy(val_idx) == pytest.approx(manifest["metrics"]["accuracy"], abs=1e-9)
    assert accuracy(test_idx) == pytest.approx(manifest["test_metrics"]["accuracy"], abs=1e-9)
    q = manifest["quality"]
    assert q["metric"] == "accuracy" and q["validation"] == manifest["metrics"]["accuracy"]
    assert q["test"] == manifest["test_metrics"]["accuracy"] and "quote test" in q["note"]
    assert manifest["test_split"]["n"] == split["n_test"]
    assert set(manifest["base_trial_test_metrics"]) == {"accuracy"}
    idx = held
    logits = outputs(idx)

    if member.config["precision"] == "fp32":
        model = load_pretrained(out)
        ref = torch_logits(model, x[idx])
        assert np.abs(ref - logits).max() <= 1e-4


def test_rerun_into_same_dir_adds_nothing(tiny_run, tiny_spec) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress

    run_dir, _ = tiny_run
    before = len(load_run(run_dir).study.trials)
    summary = run_search(tiny_spec, run_dir, progress=Progress(6, live=False, quiet=True))
    assert summary.completed == 6
    assert len(load_run(run_dir).study.trials) == before


def test_other_search_in_same_dir_is_refused(tiny_run, tiny_spec) -> None:
    from paretoforge.exceptions import SpecError
    from paretoforge.orchestrator.driver import run_search

    run_dir, _ = tiny_run
    other = tiny_spec.with_overrides(**{"recovery.epochs": 2})
    with pytest.raises(SpecError, match="different search"):
        run_search(other, run_dir)


def test_resource_bound_profile_is_not_measured_on_a_node_without_it(ray_cluster) -> None:
    from types import SimpleNamespace

    from paretoforge.exceptions import MeasurementError
    from paretoforge.hw_profiles import get_profile
    from paretoforge.orchestrator.worker import Worker

    node = ray_cluster.get_runtime_context().get_node_id()
    fake_self = SimpleNamespace(node_id=node)
    Worker._check_node_serves(fake_self, get_profile("cpu-1t"))  # any node serves it
    with pytest.raises(MeasurementError, match="hw:edge-arm"):
        Worker._check_node_serves(fake_self, get_profile("edge-arm"))


def test_profile_no_node_serves_is_refused_at_start(ray_cluster, tiny_spec, tmp_path) -> None:
    from paretoforge.exceptions import PlacementError
    from paretoforge.orchestrator.driver import run_search

    spec = tiny_spec.with_overrides(profiles=["cpu-1t", "edge-arm"])
    with pytest.raises(PlacementError, match="hw:edge-arm"):
        run_search(spec, tmp_path / "refused")
    assert not list((tmp_path / "refused").glob("artifacts/*"))


def test_the_front_and_the_base_are_retimed_together_after_the_search(tiny_run) -> None:
    run_dir, _ = tiny_run
    run = load_run(run_dir)
    retimed = run.retimed()
    front = run.front()
    base = run.base_trial()
    rounds = run.spec.search.retime_rounds
    assert rounds >= 2
    assert set(retimed) == {str(m.trial) for m in front} | {str(base.number)}
    for m in front:
        rec = retimed[str(m.trial)]["cpu-1t"]
        assert rec["rounds"] == rounds == len(rec["rel_rounds"]) == len(rec["round_p50_ms"])
        assert rec["rel_low"] <= rec["rel_p50"] <= rec["rel_high"]
        # the front quotes the re-timed drift-free median; the search's figure is kept beside
        assert m.metrics["latency_p50_ms@cpu-1t"] == pytest.approx(
            rec["rel_p50"] * rec["base_p50_ms"])
        searched = run.trial(m.trial).user_attrs[TrialAttr.METRICS]
        assert m.metrics_in_search["latency_p50_ms@cpu-1t"] == searched["latency_p50_ms@cpu-1t"]
        assert m.latency["cpu-1t"]["rel_low"] == rec["rel_low"]
        assert m.to_json()["latency"]["cpu-1t"]["source"] == "front re-time"
        manifest = json.loads(Path(m.artifacts["manifest.json"]).read_text())
        assert manifest["measurements"]["cpu-1t"]["front_retime"]["rel_rounds"] == \
            rec["rel_rounds"]
    # the base timed against its own reference: the same graph, so near 1
    assert 0.5 < retimed[str(base.number)]["cpu-1t"]["rel_p50"] < 2.0


def test_retime_cli_times_a_finished_front_again(tiny_run, tmp_path: Path) -> None:
    import shutil

    run_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    result = CliRunner().invoke(app, ["retime", str(copy), "--rounds", "3"])
    assert result.exit_code == 0, result.output
    assert "interleaved rounds" in result.output
    run = load_run(copy)
    retimed = run.retimed()
    front = json.loads((copy / "front.json").read_text())
    for m in front:
        rec = retimed[str(m["trial"])]["cpu-1t"]
        assert rec["rounds"] == 3 == len(rec["rel_rounds"])
        # the interval spans the re-time's rounds and the build's own
        assert rec["rel_low"] <= min(rec["rel_rounds"] + rec["search_rel_rounds"])
        assert rec["rel_high"] >= max(rec["rel_rounds"] + rec["search_rel_rounds"])
        assert m["latency"]["cpu-1t"]["rounds"] == 3
        assert Path(m["artifacts"]["model.onnx"]).is_relative_to(copy)
    bad = CliRunner().invoke(app, ["retime", str(copy), "--rounds", "0"])
    assert bad.exit_code == 2
