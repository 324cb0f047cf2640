"""Stand-in workers for tests and benchmarks: the driver's contract without building models.

``run_search(spec, run_dir, worker_cls=FakeWorker, worker_kwargs={...})`` runs the real driver,
Ray and Optuna around a worker that makes up deterministic metrics from the config, can sleep,
fail a build, die (SIGKILL itself) or hang on chosen configs, and writes a small artifact with a
checksummed manifest when asked. The worker contract the driver relies on:

* ``__init__(prepared, spec_json, run_dir, *, index, gates, holder, **kwargs)``
* ``ping() -> {"pid", "node_id", "index", ...}``: answered once the actor is up
* ``evaluate(trial_number, config) -> {"metrics", "artifact_dir", "timings", "worker",
  "node_id"}``, raising :class:`~paretoforge.exceptions.BuildError` for a bad candidate

Example:
    >>> w = FakeWorker(None, spec.model_dump(mode="json"), "runs/x")  # doctest: +SKIP
    >>> w.evaluate(0, {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 1.0,
    ...                "precision": "fp32"})["metrics"]["accuracy"]  # doctest: +SKIP
    0.6
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from paretoforge._io import atomic_write_bytes, atomic_write_json, sha256_file
from paretoforge.exceptions import BuildError
from paretoforge.search_spaces import CandidateConfig
from paretoforge.spec import Spec

__all__ = ["FakeWorker", "fake_metrics"]


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
        out[f"latency_p50_ms@{p}"] = round(lat, 6)
        out[f"latency_p90_ms@{p}"] = round(lat * 1.1, 6)
        out[f"latency_mean_ms@{p}"] = round(lat * 1.02, 6)
    return out


def _matches(cfg: dict[str, Any], patterns: list[dict[str, Any]]) -> bool:
    return any(all(cfg.get(k) == v for k, v in p.items()) for p in patterns)


class FakeWorker:
    """A worker whose evaluation is made up; behaviour per config is set by keyword arguments.

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
                 gates: dict[str, Any] | None = None, holder: str = "", sleep_s: float = 0.0,
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

    def evaluate(self, trial_number: int, config: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        cfg = CandidateConfig.model_validate(config)
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
        rel = Path("artifacts") / cfg.key
        if self.write_artifacts:
            self._write_artifact(cfg, metrics, trial_number)
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
                        trial_number: int) -> None:
        final = self.run_dir / "artifacts" / cfg.key
        tmp = final.parent / f".{cfg.key}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(tmp / "model.onnx", cfg.canonical_json().encode())
        atomic_write_json(tmp / "manifest.json", {
            "format": "paretoforge-artifact/1", "config": cfg.model_dump(mode="json"),
            "key": cfg.key, "metrics": metrics, "fake": True,
            "built_on": {"worker": self.index, "node_id": self.node_id, "trial": trial_number},
            "files": {"model.onnx": sha256_file(tmp / "model.onnx")},
        })
        if final.exists():
            import shutil

            shutil.rmtree(final)
        os.replace(tmp, final)


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray
        pass
    return "local"
