"""Pieces of the orchestrator without a search: hypervolume, archive, gate holders, samplers,
progress lines, the run lock, storage sync, artifact checks."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from paretoforge.orchestrator.hypervolume import ParetoArchive, hypervolume, worst_point
from paretoforge.orchestrator.results import non_dominated
from paretoforge.samplers import SAMPLERS

DIRS2 = ["maximize", "minimize"]


def _grid_volume(points, dirs, ref, n=40) -> float:
    """Brute force: the fraction of a grid over [best, ref] that some point dominates."""
    lo = [min(p[i] for p in points) if d == "minimize" else max(p[i] for p in points)
          for i, d in enumerate(dirs)]
    cells = 0
    total = n ** len(dirs)
    import itertools

    for idx in itertools.product(range(n), repeat=len(dirs)):
        c = [lo[i] + (ref[i] - lo[i]) * (k + 0.5) / n for i, k in enumerate(idx)]
        if any(all((p[i] >= c[i]) if d == "maximize" else (p[i] <= c[i])
                   for i, d in enumerate(dirs)) for p in points):
            cells += 1
    box = 1.0
    for i in range(len(dirs)):
        box *= abs(ref[i] - lo[i])
    return box * cells / total


def test_hypervolume_matches_brute_force_in_3d() -> None:
    rng = random.Random(1)
    dirs = ["maximize", "minimize", "minimize"]
    for _ in range(3):
        pts = [(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0, 1)) for _ in range(6)]
        ref = worst_point(pts, dirs)
        assert hypervolume(pts, dirs, ref) == pytest.approx(_grid_volume(pts, dirs, ref),
                                                            rel=0.1, abs=2e-3)


def test_hypervolume_properties() -> None:
    rng = random.Random(0)
    for _ in range(50):
        pts = [(rng.uniform(0, 1), rng.uniform(0, 5)) for _ in range(rng.randint(1, 12))]
        ref = (-0.1, 6.0)
        hv = hypervolume(pts, DIRS2, ref)
        front = [pts[i] for i in non_dominated(pts, DIRS2)]
        assert hv == pytest.approx(hypervolume(front, DIRS2, ref))  # only the front counts
        more = pts + [(rng.uniform(0, 1), rng.uniform(0, 5))]
        assert hypervolume(more, DIRS2, ref) >= hv - 1e-12  # adding a point never lowers it
    assert hypervolume([(0.5, 1.0)], DIRS2, (0.5, 1.0)) == 0.0  # the reference itself: none
    assert hypervolume([(1.0,)], ["minimize"], (3.0,)) == 2.0


def test_archive_is_the_non_dominated_set() -> None:
    rng = random.Random(2)
    for _ in range(30):
        a = ParetoArchive(DIRS2)
        pts = [(rng.randint(0, 6), rng.randint(0, 6)) for _ in range(20)]
        for p in pts:
            a.add(p)
        expect = {pts[i] for i in non_dominated(pts, DIRS2)}
        assert {tuple(int(v) for v in p) for p in a.points} == expect


def test_gate_releases_a_dead_holder(ray_cluster) -> None:
    from paretoforge.orchestrator.gate import CoreGate

    ray = ray_cluster
    gate = ray.remote(num_cpus=0, max_concurrency=16)(CoreGate).remote()
    assert ray.get(gate.acquire_shared.remote("w0.0"))
    pending = gate.acquire_exclusive.remote("w1.1")  # waits for the reader
    dead_waiter = gate.acquire_shared.remote("w2.2")  # waits behind the writer
    assert not ray.wait([pending], timeout=0.3)[0]
    ray.get(gate.release_holder.remote("w0.0"))  # w0.0 died holding the gate
    assert ray.get(pending, timeout=10) is True
    ray.get(gate.release_holder.remote("w2.2"))  # w2.2 died while waiting
    assert ray.get(dead_waiter, timeout=10) is False
    assert ray.get(gate.acquire_shared.remote("w2.2")) is False  # never again
    ray.get(gate.release_exclusive.remote("w1.1"))
    assert ray.get(gate.state.remote()) == {"readers": 0, "writer": 0, "writers_waiting": 0}


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_sampler_proposes_valid_configs(sampler: str, make_spec) -> None:
    import optuna

    from paretoforge.orchestrator.loop import constraint_values
    from paretoforge.samplers import make_sampler
    from paretoforge.search_spaces import SearchSpace
    from paretoforge.testing import fake_metrics

    spec = make_spec({"sampler": sampler, "trials": 8, "population_size": 4},
                     constraints=[{"metric": "accuracy", "min": 0.7}])
    space = SearchSpace.from_preset(spec.space.preset, spec.space.dimensions)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=make_sampler(spec.search))
    study.enqueue_trial({"layers_kept": 1, "heads_kept": 2, "ffn_kept": 0.5,
                         "precision": "int8"})
    for i in range(8):
        trial = study.ask()
        cfg = space.suggest(trial)
        if i == 0:
            assert cfg.layers_kept == 1 and cfg.heads_kept == 2 and cfg.precision == "int8"
        for k, v in cfg.model_dump().items():
            if k == "fusion" and k not in space.dimensions:  # an optional dimension, off here
                assert v is False
                continue
            if k == "int4_accuracy_level" and k not in space.dimensions:  # optional, unset
                assert v == 0
                continue
            assert v in space.dimensions[k]
        m = fake_metrics(cfg, ["cpu-1t"])
        for j, c in enumerate(constraint_values(spec, m)):
            trial.set_constraint(f"c{j}", c)
        study.tell(trial, [m["accuracy"], m["latency_p50_ms@cpu-1t"]])
    assert len(study.trials) == 8
    assert all(len(t.constraints) == 1 for t in study.trials)


def test_progress_line_has_hypervolume_and_eta() -> None:
    from paretoforge.orchestrator.progress import Progress

    out = io.StringIO()
    p = Progress(10, stream=out, live=False)
    p.update("trial 3 done", done=4, front=2, hypervolume=0.125,
             hv_reference={"accuracy": 0.5, "latency_p50_ms@cpu-1t": 3.0}, eta_s=95.0)
    line = out.getvalue()
    assert "hv 0.125 (ref: worst observed accuracy=0.5, latency_p50_ms@cpu-1t=3)" in line
    assert "eta 01:35" in line and "done 4/10" in line


def test_run_lock_refuses_a_second_driver(tmp_path: Path) -> None:
    from paretoforge.exceptions import ParetoforgeError
    from paretoforge.orchestrator.driver import run_lock

    with run_lock(tmp_path):
        with pytest.raises(ParetoforgeError, match="in use by another driver"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released when the first one ended
        pass


def test_journal_survives_without_per_write_fsync(tmp_path: Path, tiny_spec) -> None:
    """Appends are visible to a second reader at once; sync() makes them durable."""
    from paretoforge.orchestrator.storage import open_storage, open_study

    storage, backend = open_storage(tmp_path, tiny_spec)
    study = open_study(tmp_path, tiny_spec, storage=storage)
    trial = study.ask()
    trial.suggest_categorical("layers_kept", [1, 2])
    study.tell(trial, [0.5, 1.0])
    reader = open_study(tmp_path, tiny_spec, create=False)
    assert [t.values for t in reader.get_trials()] == [[0.5, 1.0]]
    backend.sync()
    assert backend._pf_dirty is False


def test_verify_artifact_catches_a_changed_file(tmp_path: Path) -> None:
    from paretoforge._io import atomic_write_json, sha256_file
    from paretoforge.pipeline.artifacts import ARTIFACT_FORMAT, remove_partial, verify_artifact
    from paretoforge.search_spaces import CandidateConfig

    cfg = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5, "precision": "int8"}
    # an artifact in a real build's format, written by hand (a fake's never verifies)
    key = CandidateConfig(**cfg).key
    art = tmp_path / "artifacts" / key
    art.mkdir(parents=True)
    (art / "model.onnx").write_bytes(CandidateConfig(**cfg).canonical_json().encode())
    atomic_write_json(art / "manifest.json", {
        "format": ARTIFACT_FORMAT, "config": cfg, "key": key, "metrics": {"accuracy": 0.5},
        "files": {"model.onnx": sha256_file(art / "model.onnx")}})
    assert verify_artifact(art, key=key).key == key
    assert verify_artifact(art, key="0" * 16) is None
    (art / "model.onnx").write_bytes(b"changed")
    assert verify_artifact(art) is None
    (tmp_path / "artifacts" / f".{key}.tmp-123").mkdir()
    (tmp_path / "artifacts" / f".{key}.tmp-456").mkdir()
    assert remove_partial(tmp_path, pid=123) == 1
    assert remove_partial(tmp_path) == 1
    assert json.loads((art / "manifest.json").read_text())["key"] == key


def test_worker_errors_are_classified_by_type_not_by_name() -> None:
    from ray.exceptions import ActorDiedError, NodeDiedError, RayTaskError

    from paretoforge.exceptions import BuildError, MeasurementError
    from paretoforge.names import FailKind
    from paretoforge.orchestrator.loop import _cause, _fail_kind
    from paretoforge.orchestrator.pool import is_worker_lost

    class ExportFailed(BuildError):  # a subclass: its name is not "BuildError"
        pass

    class BuildErrorLookalike(Exception):  # the name, not the type
        pass

    assert _fail_kind(ExportFailed("x")) is FailKind.BUILD
    assert _fail_kind(MeasurementError("x")) is FailKind.MEASUREMENT
    assert _fail_kind(BuildErrorLookalike("BuildError: x")) is FailKind.ERROR
    # What ray.get raises for an error inside the actor: a RayTaskError carrying the cause.
    wrapped = RayTaskError("evaluate", "Traceback ...", ExportFailed("shape"))
    for e in (wrapped, wrapped.as_instanceof_cause()):
        assert isinstance(_cause(e), ExportFailed) and _fail_kind(_cause(e)) is FailKind.BUILD
        assert not is_worker_lost(e)
    assert is_worker_lost(ActorDiedError()) and is_worker_lost(NodeDiedError("node gone"))
    assert not is_worker_lost(RuntimeError("ActorDiedError: the actor died"))


def test_the_study_carries_the_objectives_names(tmp_path: Path, tiny_spec) -> None:
    import optuna

    from paretoforge.orchestrator.storage import JOURNAL, open_storage, open_study

    names = [o.metric for o in tiny_spec.objectives]
    study = open_study(tmp_path, tiny_spec)
    assert study.metric_names == names
    storage, _ = open_storage(tmp_path, tiny_spec)
    assert open_study(tmp_path, tiny_spec, storage=storage).metric_names == names  # reopened
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / JOURNAL)))
    assert optuna.load_study(study_name=tiny_spec.name, storage=journal).metric_names == names


def test_the_first_recorded_base_latency_is_the_runs(tmp_path) -> None:
    from paretoforge.orchestrator.worker import _run_base_latency

    path = tmp_path / "latency@cpu.json"
    assert _run_base_latency(path, 0.2, {"measured_by": 0}) == 0.2
    # a later worker (or a resumed run) measured its own; the run keeps the first
    assert _run_base_latency(path, 0.3, {"measured_by": 1}) == 0.2
    assert [p.name for p in tmp_path.iterdir()] == ["latency@cpu.json"]


def test_a_resumed_finishing_trial_ships_its_weights_only_where_the_run_is_unseen(
        tmp_path: Path) -> None:
    """ASHA's resume on a cluster without a shared filesystem: a worker that does not see the
    run directory gets the previous rung's weights with the job; one that sees it reads them
    there."""
    from paretoforge.orchestrator.loop import resume_payload
    from paretoforge.pipeline.artifacts import artifact_path

    d = artifact_path(tmp_path, "abc-r3")
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"weights of rung 0")
    resume = {"key": "abc-r3", "epochs": 3}
    assert resume_payload(tmp_path, resume, in_place=True) == resume
    assert resume_payload(tmp_path, resume, in_place=False) == {
        **resume, "weights": b"weights of rung 0"}
    assert resume == {"key": "abc-r3", "epochs": 3}  # the job's own record is not changed
