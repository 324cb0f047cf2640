"""Stand-in workers for tests and benchmarks: the driver's contract without building models.

``run_search(spec, run_dir, worker_cls=FakeWorker, worker_kwargs={...})`` runs the real driver,
Ray and Optuna around a worker that makes up deterministic metrics from the config, can sleep,
fail a build, die (SIGKILL itself) or hang on chosen configs, and writes a small artifact with a
checksummed manifest when asked. :class:`FakeWorker` takes the constructor of
:class:`~paretoforge.orchestrator.protocol.CandidateWorker` (the real worker's) plus its own
keyword-only knobs, which ``worker_kwargs`` sets.

A fake's manifest says ``"format": "paretoforge-fake/1"`` and ``"fake": true``, so
:func:`~paretoforge.pipeline.artifacts.verify_artifact` refuses it: it can never pass for a
real artifact (be reused by a resumed real search, loaded as a checkpoint or exported). A
resumed fake search that is to reuse fake artifacts says so:
``run_search(..., worker_cls=FakeWorker, verify=verify_fake_artifact)``.

Example:
    >>> w = FakeWorker(None, spec.model_dump(mode="json"), "runs/x")  # doctest: +SKIP
    >>> w.evaluate(0, {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 1.0,
    ...                "precision": "fp32"})["metrics"]["accuracy"]  # doctest: +SKIP
    0.6
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from paretoforge._io import atomic_write_bytes, atomic_write_json, sha256_file
from paretoforge.exceptions import BuildError
from paretoforge.manifest import Manifest
from paretoforge.pipeline.artifacts import files_match
from paretoforge.search_spaces import CandidateConfig
from paretoforge.spec import Spec

__all__ = ["FAKE_FORMAT", "FakeWorker", "fake_metrics", "verify_fake_artifact"]

FAKE_FORMAT = "paretoforge-fake/1"  # the manifest format of a fake's artifact


def fake_metrics(cfg: CandidateConfig, profiles: list[str]) -> dict[str, float]:
    """Deterministic metrics in which smaller models are faster and (mostly) less accurate."""
    size = cfg.layers_kept * cfg.heads_kept * (0.5 + cfg.ffn_kept)
    int8 = cfg.precision == "int8"
    acc = 0.5 + 0.05 * cfg.layers_kept + 0.03 * cfg.heads_kept + 0.1 * cfg.ffn_kept
    acc -= 0.02 if int8 else 0.0
    out = {"accuracy": round(min(acc, 0.99), 6),
           "onnx_bytes": float(int(size * 10_000 * (0.3 if int8 else 1.0))),
           "params": float(int(size * 2_500))}
    for i, p in enumerate(profiles):
        lat = (0.1 + 0.05 * size) * (0.7 if int8 else 1.0) * (1.0 + 0.5 * i)
        out[f"latency_p50_ms@{p}"] = round(lat, 6)  # drift-free: a fake machine never drifts
        out[f"latency_p50_abs_ms@{p}"] = round(lat, 6)
        out[f"latency_p90_ms@{p}"] = round(lat * 1.1, 6)
        out[f"latency_mean_ms@{p}"] = round(lat * 1.02, 6)
    return out


def _matches(cfg: dict[str, Any], patterns: list[dict[str, Any]]) -> bool:
    return any(all(cfg.get(k) == v for k, v in p.items()) for p in patterns)


class FakeWorker:
    """A worker whose evaluation is made up; behaviour per config is set by keyword arguments.

    The positional and keyword arguments up to ``benches`` are
    :class:`~paretoforge.orchestrator.protocol.CandidateWorker`'s; a fake never pins itself
    (``pin``) nor measures (``benches``). The rest set its behaviour:

    Args:
        sleep_s: Seconds each evaluation takes (a busy-free sleep).
        fail_when: Configs (partial dicts) whose build raises BuildError.
        crash_when: Configs whose worker process SIGKILLs itself mid-evaluation, the first
            ``crash_times`` times each (counted in marker files under the run directory).
        crash_times: See ``crash_when``.
        hang_when: Configs whose evaluation never returns.
        write_artifacts: Write ``artifacts/<key>/`` with a small file and a manifest.
        log_path: Append ``"<trial> <key>"`` to this file at the start of every evaluation.
        fail_init: Raise in the constructor (a worker that cannot start).
    """

    def __init__(self, prepared: Any, spec: dict[str, Any], run_dir: str, *, index: int = 0,
                 gates: dict[str, Any] | None = None, holder: str = "", pin: bool = True,
                 benches: dict[str, list[Any]] | None = None, keeper: Any = None,
                 sleep_s: float = 0.0,
                 fail_when: list[dict[str, Any]] | None = None,
                 crash_when: list[dict[str, Any]] | None = None, crash_times: int = 1,
                 hang_when: list[dict[str, Any]] | None = None,
                 write_artifacts: bool = False, log_path: str | None = None,
                 fail_init: bool = False) -> None:
        if fail_init:
            raise RuntimeError("fake worker: cannot start (missing dependency)")
        self.spec = Spec.model_validate(spec)
        self.run_dir = Path(run_dir)
        self.index = index
        self.holder = holder
        self.sleep_s = sleep_s
        self.fail_when = fail_when or []
        self.crash_when = crash_when or []
        self.crash_times = crash_times
        self.hang_when = hang_when or []
        self.write_artifacts = write_artifacts
        self.log_path = log_path
        self.node_id = _node_id()

    def ping(self) -> dict[str, Any]:
        return {"index": self.index, "node_id": self.node_id, "pid": os.getpid(),
                "holder": self.holder}

    def evaluate(self, trial_number: int, config: dict[str, Any], *,
                 recovery_epochs: int | None = None,
                 resume: dict[str, Any] | None = None) -> dict[str, Any]:
        # the made-up recovery below depends on the total epochs alone: resumed or not
        t0 = time.perf_counter()
        cfg = CandidateConfig.model_validate(config)
        key = cfg.key if recovery_epochs is None else f"{cfg.key}-r{recovery_epochs}"
        if self.log_path:
            with open(self.log_path, "a") as f:  # O_APPEND: one whole line per write
                f.write(f"{trial_number} {cfg.key}\n")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if _matches(config, self.crash_when) and self._count_crash(cfg.key):
            os.kill(os.getpid(), signal.SIGKILL)
        if _matches(config, self.hang_when):
            time.sleep(3600)
        if _matches(config, self.fail_when):
            raise BuildError(f"candidate {cfg.key} failed: export: fake shape error in {config}")
        metrics = fake_metrics(cfg, list(self.spec.profiles))
        if recovery_epochs:  # a made-up recovery: more epochs, closer to the base's accuracy
            metrics["accuracy"] += (1.0 - metrics["accuracy"]) * (1 - 0.5 ** recovery_epochs) / 2
        rel = Path("artifacts") / key
        if self.write_artifacts:
            self._write_artifact(cfg, metrics, trial_number, key=key)
        return {"metrics": metrics, "artifact_dir": str(rel),
                "timings": {"total_s": time.perf_counter() - t0},
                "worker": self.index, "node_id": self.node_id}

    def _count_crash(self, key: str) -> bool:
        """True (and recorded) while this config has crashed fewer than crash_times times."""
        d = self.run_dir / ".fake-crashes"
        d.mkdir(parents=True, exist_ok=True)
        done = len(list(d.glob(f"{key}-*")))
        if done >= self.crash_times:
            return False
        (d / f"{key}-{done}").touch()
        return True

    def _write_artifact(self, cfg: CandidateConfig, metrics: dict[str, float],
                        trial_number: int, *, key: str | None = None) -> None:
        key = key or cfg.key
        final = self.run_dir / "artifacts" / key
        tmp = final.parent / f".{key}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(tmp / "model.onnx", cfg.canonical_json().encode())
        atomic_write_json(tmp / "manifest.json", {
            "format": FAKE_FORMAT, "config": cfg.model_dump(mode="json"),
            "key": key, "metrics": metrics, "fake": True,
            "built_on": {"worker": self.index, "node_id": self.node_id, "trial": trial_number},
            "files": {"model.onnx": sha256_file(tmp / "model.onnx")},
        })
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)


def verify_fake_artifact(directory: str | os.PathLike[str], *, key: str | None = None
                         ) -> Manifest | None:
    """The manifest of a complete artifact that a :class:`FakeWorker` wrote, else None.

    The checks of :func:`~paretoforge.pipeline.artifacts.verify_artifact` (every file
    matches its sha256; the key, when given, matches) for fake manifests only: a test that
    resumes a fake search passes it as ``run_search(..., verify=verify_fake_artifact)``; real
    runs never do.
    """
    d = Path(directory)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(manifest, dict) or manifest.get("format") != FAKE_FORMAT
            or manifest.get("fake") is not True):
        return None
    if key is not None and manifest.get("key") != key:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("metrics"), dict):
        return None
    if not files_match(d, files):
        return None
    # unvalidated on purpose: a fake's format never validates as a real Manifest
    return Manifest.model_construct(**manifest)


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray
        pass
    return "local"
