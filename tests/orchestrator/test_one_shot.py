"""A one-shot search end to end: a real supernet (Ray Train), sub-networks cut from it as
candidates, then finishing rungs that recover the best of them; what the front reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoforge.names import Phase, TrialAttr
from paretoforge.orchestrator.driver import run_search
from paretoforge.orchestrator.progress import Progress
from paretoforge.orchestrator.results import load_run
from paretoforge.pipeline.artifacts import verify_artifact
from paretoforge.search_spaces import CandidateConfig
from paretoforge.testing import tiny_spec
from paretoforge.testing.processes import sigkill_session, wait_for_trials

pytestmark = pytest.mark.slow


def test_one_shot_search_finishes_its_front(ray_cluster, tmp_path: Path) -> None:
    spec = tiny_spec({"trials": 8, "strategy": "one-shot", "sampler": "random"},
                     one_shot={"supernet_epochs": 1, "finish_candidates": 2,
                               "finish_epochs": [1, 2], "eta": 2,
                               "screen_calls": 5, "screen_seconds": 1e-4})
    run_dir = tmp_path / "r"
    summary = run_search(spec, run_dir, progress=Progress(8, live=False, quiet=True))
    assert summary.failed == 0
    run = load_run(run_dir)
    trials = run.trials()
    one_shot = [t for t in trials if t.user_attrs.get(TrialAttr.PHASE) == Phase.ONE_SHOT]
    finish = [t for t in trials if t.user_attrs.get(TrialAttr.PHASE) == Phase.FINISH]
    # search.trials counts distinct sub-networks in a one-shot search; repeats are free
    built = [t for t in one_shot if TrialAttr.CACHED_FROM not in t.user_attrs]
    assert len(built) == 8 == len({t.user_attrs[TrialAttr.KEY] for t in one_shot})
    rungs = sorted(t.user_attrs[TrialAttr.RUNG] for t in finish)
    assert rungs.count(0) >= 1 and rungs.count(1) == 1  # eta 2: ceil(2 / 2) = 1 goes on
    for t in finish:
        key = t.user_attrs[TrialAttr.KEY]
        epochs = t.user_attrs[TrialAttr.RECOVERY_EPOCHS]
        assert key.endswith(f"-r{epochs}")
        origin = run.trial(t.user_attrs[TrialAttr.ONE_SHOT_TRIAL])
        assert origin.user_attrs[TrialAttr.PHASE] == Phase.ONE_SHOT
        assert origin.params == t.params  # the same sub-network, recovered
        manifest = verify_artifact(run.artifact_dir(t), key=key)
        assert manifest is not None  # a complete, checksummed artifact
        assert manifest.plan["source"].startswith("supernet:")
        recover = next(s for s in manifest.stages if s.name == "recover")
        assert recover.seconds > 0  # it trained
        if t.user_attrs[TrialAttr.RUNG] == 1:  # it continued from its rung-0 weights
            before = next(u for u in finish if u.user_attrs[TrialAttr.RUNG] == 0
                          and u.params == t.params)
            assert t.user_attrs[TrialAttr.RESUME_FROM] == before.user_attrs[TrialAttr.KEY]
            assert manifest.plan["resumed_from"] == {
                "artifact": before.user_attrs[TrialAttr.KEY], "epochs": 1}
            # what its front entry would carry (front, front --json)
            assert run._resumed_from(t) == {"trial": before.number, "epochs": 1,
                                            "artifact": before.user_attrs[TrialAttr.KEY]}
        else:
            assert "resumed_from" not in manifest.plan and run._resumed_from(t) is None
        # a finishing trial's latency ranks the rungs: screened like its one-shot trial (the
        # same graph) when the front is re-timed, the figures it quotes
        assert spec.search.retime_rounds > 0
        assert {m["fidelity"] for m in manifest.measurements.values()} == {"screening"}
        assert all(m["rounds"] == spec.one_shot.screen_rounds
                   for m in manifest.measurements.values())
    exports = []
    for t in one_shot:
        if TrialAttr.CACHED_FROM in t.user_attrs:
            continue
        manifest = verify_artifact(run.artifact_dir(t), key=t.user_attrs[TrialAttr.KEY])
        exports += [s.method for s in manifest.stages if s.name == "export" and not s.cached]
        if t.user_attrs.get(TrialAttr.IS_BASE):
            continue
        pruned = manifest.config["layers_kept"] < 2 or manifest.config["heads_kept"] < 2
        if pruned:
            assert manifest.plan["source"].startswith("supernet:")  # cut, not distilled
        # a sub-network as cut only ranks the one-shot search: a screening measurement
        for m in manifest.measurements.values():
            assert m["fidelity"] == ("screening" if pruned or manifest.config["ffn_kept"] != 1.0
                                     else "full")
            if m["fidelity"] == "screening":
                assert m["rounds"] == spec.one_shot.screen_rounds
                # beside the worker's kept reference session (fresh ones in the full protocol)
                assert m["env"]["reference_session"] == "kept, reused across measurements"
                # past its (tiny) budget a screening round stops at screen_calls calls
                assert m["runs"] == spec.one_shot.screen_calls
    # two workers, two depths and more than four builds: a worker exported a depth it had
    # traced before by writing the weights into that graph
    assert set(exports) <= {"traced", "template"} and "template" in exports
    # the unpruned base at every other precision of the space is a candidate too
    precisions = set(spec.space.dimensions["precision"]) - {"fp32"}
    assert precisions and {t.user_attrs.get(TrialAttr.BASE_PRECISION) for t in one_shot} >= \
        precisions
    # a repeated proposal is followed by a new one-step mutation of it, when one exists
    keys = [t.user_attrs[TrialAttr.KEY] for t in one_shot]
    mutants = [t for t in one_shot if TrialAttr.MUTATED_FROM in t.user_attrs]
    assert mutants or len(keys) == len(set(keys))
    for t in mutants:
        parent = run.trial(t.user_attrs[TrialAttr.MUTATED_FROM])
        assert keys.count(parent.user_attrs[TrialAttr.KEY]) >= 2  # the parent was a repeat
        assert sum(t.params[k] != parent.params[k] for k in t.params) == 1
    front = run.front()
    assert front
    # the front's re-time follows the full protocol: fresh sessions of both, every round
    for by_profile in run.retimed().values():
        for rec in by_profile.values():
            assert "reference_session" not in rec["env"]
    for m in front:
        if m.phase == Phase.FINISH:
            assert m.one_shot is not None and m.recovery_epochs in (1, 2)
            assert set(m.one_shot["objectives"]) == set(m.objectives)
            if m.recovery_epochs == 2:  # rung 1: it says which rung-0 trial it continued
                before = next(t for t in finish if t.user_attrs[TrialAttr.RUNG] == 0
                              and t.params == run.trial(m.trial).params)
                assert m.resumed_from == {"trial": before.number, "epochs": 1,
                                          "artifact": before.user_attrs[TrialAttr.KEY]}
                assert m.to_json()["resumed_from"] == m.resumed_from
            else:
                assert m.resumed_from is None
        else:  # the only one-shot members of a finished front are unpruned (the base)
            assert m.config["layers_kept"] == 2 and m.config["heads_kept"] == 2
            assert m.config["ffn_kept"] == 1.0
    # a second run of the same search (a resumed driver) runs nothing again
    again = run_search(spec, run_dir, progress=Progress(8, live=False, quiet=True))
    assert len(load_run(run_dir).trials()) == len(trials)
    assert again.failed == 0


def test_one_shot_driver_sigkilled_then_resumed(tmp_path: Path) -> None:
    """A one-shot search whose driver is SIGKILLed mid-search resumes from the study: the
    supernet is not trained again, no sub-network is built twice, nothing done is lost, and
    the finishing rungs run once."""
    import os
    import subprocess
    import sys

    import yaml

    from paretoforge.testing import tiny_spec_dict

    spec = tiny_spec_dict({"trials": 10, "strategy": "one-shot", "sampler": "random"},
                          one_shot={"supernet_epochs": 1, "finish_candidates": 2,
                                    "finish_epochs": [1, 2], "eta": 2})
    spec_path, run_dir = tmp_path / "spec.yaml", tmp_path / "run"
    spec_path.write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cli = [sys.executable, "-m", "paretoforge.cli"]
    driver = subprocess.Popen([*cli, "search", str(spec_path), "--run-dir", str(run_dir),
                               "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True, env=env)

    def built(t) -> bool:  # a trial trained, not one cached from an earlier trial
        return t.state.name == "COMPLETE" and TrialAttr.CACHED_FROM not in t.user_attrs

    try:
        wait_for_trials(driver, run_dir, 4, counts=built, timeout_s=300)
    finally:
        sigkill_session(driver)
    before = {t.number: t for t in load_run(run_dir).study.get_trials(deepcopy=False)
              if t.state.name == "COMPLETE"}
    resumed = subprocess.run([*cli, "resume", str(run_dir)], capture_output=True, text=True,
                             timeout=400, env=env, start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    import re

    assert re.search(r"supernet \w+: cached", resumed.stdout), resumed.stdout[-2000:]
    run = load_run(run_dir)
    trials = [t for t in run.trials() if t.state.name == "COMPLETE"]
    after = {t.number: t for t in trials}
    for n, t in before.items():  # nothing done is lost or changed
        assert after[n].values == t.values
    built_keys = [t.user_attrs[TrialAttr.KEY] for t in trials
                  if TrialAttr.CACHED_FROM not in t.user_attrs]
    assert len(built_keys) == len(set(built_keys)), "a sub-network was built twice"
    one_shot = {t.user_attrs[TrialAttr.KEY] for t in trials
                if t.user_attrs.get(TrialAttr.PHASE) == Phase.ONE_SHOT}
    assert len(one_shot) == 10
    finish = [t for t in trials if t.user_attrs.get(TrialAttr.PHASE) == Phase.FINISH]
    assert sorted(t.user_attrs[TrialAttr.RUNG] for t in finish).count(1) == 1
    sources = {verify_artifact(run.artifact_dir(t), key=t.user_attrs[TrialAttr.KEY])
               .plan.get("source") for t in trials if TrialAttr.CACHED_FROM not in t.user_attrs
               and t.user_attrs.get(TrialAttr.PHASE) == Phase.ONE_SHOT
               and not t.user_attrs.get(TrialAttr.IS_BASE)}
    assert len({s for s in sources if s and s.startswith("supernet:")}) == 1  # one supernet


def test_workers_started_before_the_supernet_build_what_later_ones_do(ray_cluster,
                                                                      tmp_path: Path) -> None:
    """A worker started (and warmed) before the supernet exists, then handed it, cuts and
    exports the same candidate, byte for byte, as a worker started with the supernet."""
    from paretoforge.orchestrator.worker import Worker
    from paretoforge.pipeline import artifact_path, prepare_cached
    from paretoforge.pipeline.oneshot import attach_supernet

    spec = tiny_spec({"trials": 8, "strategy": "one-shot", "sampler": "random"},
                     one_shot={"supernet_epochs": 1})
    prepared = prepare_cached(spec, log=lambda *_: None)
    full = attach_supernet(prepared, spec, log=lambda *_: None)
    spec_json = spec.model_dump(mode="json")
    early = Worker(prepared.for_workers(), spec_json, str(tmp_path / "early"), pin=False)
    warmed = early.warm()
    assert "error" not in warmed and warmed["seconds"] > 0
    assert list((tmp_path / "early" / "reference").glob("*/model.onnx"))  # built by warm
    early.attach_supernet(full.supernet)
    late = Worker(full.for_workers(), spec_json, str(tmp_path / "late"), pin=False)
    cfg = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5, "precision": "fp32",
           "fusion": False}
    key = CandidateConfig.model_validate(cfg).key
    for w in (early, late):
        w.evaluate(1, cfg)
    manifests = [verify_artifact(artifact_path(tmp_path / name, key), key=key)
                 for name in ("early", "late")]
    assert manifests[0] is not None and manifests[1] is not None
    assert manifests[0].plan["source"] == manifests[1].plan["source"] == \
        f"supernet:{full.supernet['key']}"
    assert manifests[0].files["model.onnx"] == manifests[1].files["model.onnx"]
    assert manifests[0].metrics["accuracy"] == manifests[1].metrics["accuracy"]
    # the session that scored it was the one its screening timed, and it scores as a fresh
    # quality session does
    from paretoforge.evaluators.quality import onnx_logits

    path = artifact_path(tmp_path / "late", key) / "model.onnx"
    fresh = onnx_logits(path, full.feeds("validation"), batch_size=1)
    assert manifests[1].metrics["accuracy"] == float(
        late.context.task.score(fresh, full.task.scoring("validation"), full.task_state))
    assert manifests[1].measurements["cpu-1t"]["env"]["sessions"] == \
        "one, reused by every round"
    assert late._quality_runtime is None  # closed with its build
    # no recovery: a sub-network is scored as cut, as by a worker started with the supernet
    assert all(next(s for s in m.stages if s.name == "recover").seconds < 0.01
               for m in manifests)


def test_workers_start_while_the_supernet_trains(ray_cluster, tmp_path: Path) -> None:
    """With free CPUs for both, the search's workers start and warm while Ray Train trains the
    supernet: the run's reference artifact is built before the first trial is asked."""
    spec = tiny_spec({"trials": 4, "strategy": "one-shot", "sampler": "random"},
                     cluster={"workers": 1},
                     one_shot={"supernet_epochs": 2, "finish_candidates": 0})
    run_dir = tmp_path / "r"
    summary = run_search(spec, run_dir, progress=Progress(4, live=False, quiet=True))
    assert summary.failed == 0
    run = load_run(run_dir)
    reference = next((run_dir / "reference").glob("*/model.onnx"))  # built by warm()
    first = min(t.datetime_start for t in run.trials())
    assert reference.stat().st_mtime < first.timestamp()
    built = [t for t in run.trials() if TrialAttr.CACHED_FROM not in t.user_attrs
             and not t.user_attrs.get(TrialAttr.IS_BASE)]
    pruned = [t for t in built if not CandidateConfig.model_validate(
        t.user_attrs[TrialAttr.CONFIG]).is_unpruned(2, 2)]
    assert len(pruned) >= 2
    for t in pruned:  # every pruned candidate cut from the supernet, as cut
        manifest = verify_artifact(run.artifact_dir(t), key=t.user_attrs[TrialAttr.KEY])
        assert manifest.plan["source"].startswith("supernet:")
        assert next(s for s in manifest.stages if s.name == "recover").seconds < 0.01


def test_a_worker_that_cannot_take_the_supernet_is_replaced(ray_cluster) -> None:
    """An early worker whose ``attach_supernet`` fails never searches: the pool starts
    another, from the whole bundle."""
    import ray

    from paretoforge.orchestrator.driver import _attach_supernet
    from paretoforge.orchestrator.pool import WorkerPool

    @ray.remote(num_cpus=0)
    class Early:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

        def ping(self) -> dict:
            return {}

        def attach_supernet(self, supernet: dict) -> None:
            if not self.ok:
                raise RuntimeError("the supernet did not load")

    made: list = []

    def factory(index: int, holder: str):
        made.append(Early.remote(index == 0 or len(made) >= 2))  # the first worker 1 fails
        return made[-1]

    pool = WorkerPool(factory, 2, log=lambda *_: None)
    logs: list[str] = []
    try:
        _attach_supernet(pool, ray.put({"key": "k"}), logs.append)
        assert len(made) == 3 and pool.slots[0].handle is made[0]
        assert pool.slots[1].handle is made[2] and pool.replaced == 1
        assert len(logs) == 1 and logs[0].startswith("worker 1 could not take the supernet")
        assert "did not load" in logs[0]
    finally:
        pool.shutdown()
