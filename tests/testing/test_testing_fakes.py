"""paretoforge.testing: the fake worker keeps the real worker's contract and never passes for it.

The constructors of the real :class:`Worker`, the :class:`CandidateWorker` protocol and the
:class:`FakeWorker` are compared parameter by parameter, so they cannot drift apart; a run of
the fake under the real driver leaves artifacts that verification, checkpoints and export
refuse.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from paretoforge.exceptions import ParetoforgeError
from paretoforge.orchestrator.protocol import CandidateWorker
from paretoforge.pipeline.artifacts import ARTIFACT_FORMAT, verify_artifact
from paretoforge.search_spaces import CandidateConfig
from paretoforge.testing import FAKE_FORMAT, FakeWorker, tiny_spec, verify_fake_artifact

CFG = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 0.5, "precision": "int8"}


def _params(cls: type) -> list[tuple[str, object, object]]:
    """(name, kind, default) of each constructor parameter after ``self``."""
    sig = inspect.signature(cls.__init__)
    # Ray's tracing hook adds `_ray_trace_ctx` to a class once it has been made an actor
    return [(p.name, p.kind, p.default) for p in list(sig.parameters.values())[1:]
            if p.name != "_ray_trace_ctx"]


def test_real_and_fake_workers_take_the_protocol_constructor() -> None:
    from paretoforge.orchestrator.worker import Worker

    protocol = _params(CandidateWorker)
    assert [name for name, _, _ in protocol] == [
        "prepared", "spec", "run_dir", "index", "gates", "holder", "pin", "benches", "keeper"]
    assert _params(Worker) == protocol
    fake = _params(FakeWorker)
    assert fake[:len(protocol)] == protocol
    for name, kind, default in fake[len(protocol):]:  # the fake's own behaviour knobs
        assert kind is inspect.Parameter.KEYWORD_ONLY, name
        assert default is not inspect.Parameter.empty, name
    for cls in (Worker, FakeWorker):
        for method in ("ping", "evaluate"):
            assert ([p for p in inspect.signature(getattr(cls, method)).parameters
                     if p != "_ray_trace_ctx"]
                    == list(inspect.signature(getattr(CandidateWorker, method)).parameters))


def test_fake_accepts_what_the_driver_passes_every_worker(tmp_path: Path) -> None:
    w = FakeWorker(None, tiny_spec().model_dump(mode="json"), str(tmp_path), index=1, gates={},
                   holder="w1.0", pin=True, benches={})
    info = w.ping()
    assert info["index"] == 1 and isinstance(info["pid"], int) and info["node_id"]
    res = w.evaluate(0, CFG)
    assert set(res) >= {"metrics", "artifact_dir", "timings", "worker", "node_id"}


def _real_artifact(run_dir: Path, cfg: dict) -> tuple[Path, str]:
    """An artifact directory in the format a real build writes (written by hand here)."""
    from paretoforge._io import atomic_write_json, sha256_file

    c = CandidateConfig(**cfg)
    art = run_dir / "artifacts" / c.key
    art.mkdir(parents=True)
    (art / "model.onnx").write_bytes(b"not really onnx")
    atomic_write_json(art / "manifest.json", {
        "format": ARTIFACT_FORMAT, "config": c.model_dump(mode="json"), "key": c.key,
        "metrics": {"accuracy": 0.5}, "files": {"model.onnx": sha256_file(art / "model.onnx")}})
    return art, c.key


def test_a_fake_artifact_never_verifies_as_real(tmp_path: Path) -> None:
    FakeWorker(None, tiny_spec().model_dump(mode="json"), str(tmp_path),
               write_artifacts=True).evaluate(0, CFG)
    key = CandidateConfig(**CFG).key
    art = tmp_path / "artifacts" / key
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["format"] == FAKE_FORMAT and manifest["fake"] is True
    assert verify_artifact(art) is None and verify_artifact(art, key=key) is None
    assert verify_fake_artifact(art, key=key).key == key  # the tests' explicit opt-in
    assert verify_fake_artifact(art, key="0" * 16) is None
    # the same checks pass a real-format artifact, and the opt-in takes fake manifests only
    real, real_key = _real_artifact(tmp_path / "real", CFG)
    assert verify_artifact(real, key=real_key).key == real_key
    assert verify_fake_artifact(real) is None
    (art / "model.onnx").write_bytes(b"changed")
    assert verify_fake_artifact(art) is None


def test_a_fake_run_cannot_be_loaded_or_exported(ray_cluster, tmp_path: Path) -> None:
    from paretoforge.orchestrator.driver import run_search
    from paretoforge.orchestrator.progress import Progress
    from paretoforge.orchestrator.results import Checkpoint, export_trial, load_run

    spec = tiny_spec({"trials": 2, "sampler": "random"})
    run_dir = tmp_path / "r"
    summary = run_search(spec, run_dir, progress=Progress(2, live=False, quiet=True),
                         worker_cls=FakeWorker, worker_kwargs={"write_artifacts": True})
    assert summary.completed == 2
    run = load_run(run_dir)
    for t in run.trials():
        art = run.artifact_dir(t)
        assert verify_fake_artifact(art, key=t.user_attrs["key"]) is not None
        assert verify_artifact(art, key=t.user_attrs["key"]) is None
        assert Checkpoint(art).verify() is False
        with pytest.raises(ParetoforgeError, match="not a paretoforge build's artifact"):
            run.checkpoint(t.number)
        with pytest.raises(ParetoforgeError, match="not a paretoforge build's artifact"):
            export_trial(run, t.number, tmp_path / f"export-{t.number}")
        assert not (tmp_path / f"export-{t.number}").exists()
