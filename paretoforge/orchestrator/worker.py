"""The worker: builds one candidate and measures it, start to finish, on its own pinned core.

``Worker`` is a plain class; the driver makes it a Ray actor at the call site
(``ray.remote(num_cpus=1)(Worker)``), so its logic is tested without Ray too.

A build: importance-ranked surgery -> distillation from the base model -> safetensors + ONNX
export -> precision (dynamic int8) -> held-out quality on ONNX Runtime -> latency on every
profile -> manifest. Artifacts go to ``<run>/artifacts/<config key>/`` through a temporary
directory renamed into place, each file with its sha256 in the manifest.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from paretoforge._io import atomic_write_json, sha256_file
from paretoforge.exceptions import BuildError, ParetoforgeError
from paretoforge.orchestrator.artifacts import artifact_path, result_from_manifest, verify_artifact
from paretoforge.orchestrator.gate import GateClient, LocalGate
from paretoforge.orchestrator.prepare import Prepared
from paretoforge.search_spaces import CandidateConfig
from paretoforge.spec import Spec

__all__ = ["ARTIFACT_FILES", "Worker", "package_versions"]

ARTIFACT_FILES = ("model.onnx", "model.safetensors", "config.json")
_LATENCY_SAMPLES = 64  # distinct real inputs cycled through by the latency protocol


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("paretoforge", "torch", "transformers", "onnx", "onnxruntime", "optuna", "ray",
                "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class Worker:
    """Builds and measures candidates; one per core (``index`` picks the core it is pinned to).

    Example:
        >>> w = Worker(prepared, spec.model_dump(mode="json"), "runs/x", index=0)  # doctest: +SKIP
        >>> w.evaluate(0, cfg.model_dump())  # doctest: +SKIP
    """

    def __init__(self, prepared: Prepared, spec: dict[str, Any], run_dir: str, *, index: int = 0,
                 gates: dict[str, Any] | None = None, holder: str = "", pin: bool = True) -> None:
        import torch

        self.prepared = prepared
        self.spec = Spec.model_validate(spec)
        self.run_dir = Path(run_dir)
        self.index = index
        self.node_id = _node_id()
        handle = (gates or {}).get(self.node_id)
        self.gate: Any = GateClient(handle, holder) if handle is not None else LocalGate()
        self.all_cores = sorted(os.sched_getaffinity(0))
        threads = max(1, int(self.spec.cluster.cpus_per_worker))
        if pin and len(self.all_cores) > 1:
            # One core per worker: builds never spread over the core a neighbour measures on.
            start = (index * threads) % len(self.all_cores)
            n = len(self.all_cores)
            self.cores = [self.all_cores[(start + i) % n] for i in range(threads)]
            os.sched_setaffinity(0, self.cores)
        else:
            self.cores = list(self.all_cores)
        torch.set_num_threads(threads)
        self._base: Any = None
        self._importance: Any = None

    # -- public verbs ------------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        """Where this worker runs: index, Ray node, pinned cores and process id."""
        return {"index": self.index, "node_id": self.node_id, "cores": self.cores,
                "pid": os.getpid()}

    def evaluate(self, trial_number: int, config: dict[str, Any]) -> dict[str, Any]:
        """Build, score and measure one candidate; return its metrics and artifact location.

        Raises:
            BuildError: surgery, recovery, export or quantization failed (reason in message).
            MeasurementError: a profile could not be measured.
        """
        cfg = CandidateConfig.model_validate(config)
        manifest = verify_artifact(artifact_path(self.run_dir, cfg.key), key=cfg.key)
        if manifest is not None:  # built already (a retried trial whose worker died after it)
            return result_from_manifest(manifest)
        try:
            return self._evaluate(trial_number, cfg)
        except ParetoforgeError:
            raise
        except Exception as e:  # an unexpected failure is still this candidate's build failure
            tb = traceback.format_exc(limit=4)
            raise BuildError(f"candidate {cfg.key} failed: {type(e).__name__}: {e}\n{tb}") from e

    # -- steps --------------------------------------------------------------------------------

    def _evaluate(self, trial_number: int, cfg: CandidateConfig) -> dict[str, Any]:
        import numpy as np

        from paretoforge.evaluators.quality import onnx_accuracy
        from paretoforge.evaluators.size import onnx_size_bytes, param_count
        from paretoforge.kernels.export import export_onnx
        from paretoforge.kernels.ort import graph_summary
        from paretoforge.kernels.quantize import apply_precision
        from paretoforge.models.io import save_pretrained

        timings: dict[str, float] = {}
        p = self.prepared
        final = self.run_dir / "artifacts" / cfg.key
        tmp = final.parent / f".{cfg.key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with self.gate.shared():
                t0 = time.perf_counter()
                model, plan = self._build_torch(cfg, timings)
                t0 = time.perf_counter()
                save_pretrained(model, tmp)
                import torch

                example = {p.input_name: torch.from_numpy(p.x_train[:1])}
                export_onnx(model, example, tmp / "model_fp32.onnx", output_names=("logits",))
                apply_precision(tmp / "model_fp32.onnx", tmp / "model.onnx", cfg.precision)
                (tmp / "model_fp32.onnx").unlink()
                timings["export_s"] = time.perf_counter() - t0

                t0 = time.perf_counter()
                acc = onnx_accuracy(tmp / "model.onnx", p.x_heldout, p.y_heldout,
                                    input_name=p.input_name)
                timings["quality_s"] = time.perf_counter() - t0

            metrics: dict[str, float] = {
                "accuracy": float(acc),
                "onnx_bytes": float(onnx_size_bytes(tmp / "model.onnx")),
                "params": float(param_count(model)),
            }
            t0 = time.perf_counter()
            rng = np.random.default_rng(trial_number)
            idx = rng.choice(len(p.x_train), size=min(_LATENCY_SAMPLES, len(p.x_train)),
                             replace=False)
            samples = p.x_train[idx]
            measurements = {}
            for name in self.spec.profiles:
                m = self._measure(tmp / "model.onnx", name, samples)
                measurements[name] = m
                metrics[f"latency_p50_ms@{name}"] = m["p50_ms"]
                metrics[f"latency_p90_ms@{name}"] = m["p90_ms"]
                metrics[f"latency_mean_ms@{name}"] = m["mean_ms"]
            timings["measure_s"] = time.perf_counter() - t0

            manifest = {
                "format": "paretoforge-artifact/1",
                "config": cfg.model_dump(mode="json"),
                "key": cfg.key,
                "plan": plan,
                "metrics": metrics,
                "measurements": measurements,
                "graph": graph_summary(tmp / "model.onnx"),
                "task": {"name": p.task_name, "metric": "accuracy", "heldout_split": p.split,
                         "n_heldout": int(len(p.y_heldout))},
                "inputs": [{"name": p.input_name, "shape": ["batch", *p.x_train.shape[1:]],
                            "dtype": str(p.x_train.dtype)}],
                "outputs": [{"name": "logits", "shape": ["batch", p.num_classes],
                             "dtype": "float32"}],
                "preprocessing": p.preprocessing,
                "base_model": p.base_info,
                "versions": package_versions(),
                "built_on": {"node_id": self.node_id, "host": socket.gethostname(),
                             "worker": self.index, "cores": self.cores},
                "timings": timings,
                "files": {f: sha256_file(tmp / f) for f in ARTIFACT_FILES},
            }
            atomic_write_json(tmp / "manifest.json", manifest)
            if final.exists():  # an earlier identical build (e.g. a retried trial): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return {
            "metrics": metrics,
            "artifact_dir": str(final.relative_to(self.run_dir)),
            "timings": timings,
            "worker": self.index,
            "node_id": self.node_id,
        }

    def _build_torch(self, cfg: CandidateConfig, timings: dict[str, float]) -> tuple[Any, dict]:
        """Surgery ranked by importance, then distillation from the base model."""
        from paretoforge.models.distill import distill
        from paretoforge.models.importance import Importance
        from paretoforge.models.surgery import plan_from_importance, prune

        p = self.prepared
        if self._base is None:
            self._base = p.load_base()
            self._importance = Importance.from_dict(p.importance)
        t0 = time.perf_counter()
        plan = plan_from_importance(self._importance, layers_kept=cfg.layers_kept,
                                    heads_kept=cfg.heads_kept, ffn_kept=cfg.ffn_kept)
        plan_json = {"layers": list(plan.layers), "heads": [list(h) for h in plan.heads],
                     "neurons_per_layer": [len(n) for n in plan.neurons]}
        if cfg.is_unpruned(p.num_layers, p.num_heads):
            timings["surgery_s"] = timings["recovery_s"] = 0.0
            return self._base, plan_json  # the base itself: nothing to prune or recover
        model = prune(self._base, plan)
        timings["surgery_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = self.spec.recovery
        if r.epochs > 0:
            model = distill(model, self._base, p.x_train, p.y_train, epochs=r.epochs, lr=r.lr,
                            temperature=r.temperature, alpha=r.alpha, batch_size=r.batch_size,
                            seed=self.spec.search.seed)
        timings["recovery_s"] = time.perf_counter() - t0
        return model, plan_json

    def _measure(self, onnx_path: Path, profile_name: str, samples: Any) -> dict[str, Any]:
        from paretoforge.evaluators.latency import measure_latency
        from paretoforge.hw_profiles import get_profile

        profile = get_profile(profile_name)
        inputs = {self.prepared.input_name: samples}
        if profile.intra_op_threads is not None and profile.intra_op_threads <= len(self.cores):
            # Fits on this worker's own cores: the neighbours build on theirs meanwhile.
            m = measure_latency(onnx_path, profile, inputs, cores=self.cores)
        else:
            # Needs more cores than this worker owns: hold every build on the node meanwhile.
            with self.gate.exclusive():
                m = measure_latency(onnx_path, profile, inputs, cores=self.all_cores)
        out = m.model_dump(mode="json") if hasattr(m, "model_dump") else dict(vars(m))
        out.setdefault("env", {})["node_id"] = self.node_id
        return out


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray: a local id
        pass
    return f"local-{socket.gethostname()}"
