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
from paretoforge.exceptions import BuildError, MeasurementError, ParetoforgeError
from paretoforge.orchestrator.bench import BenchRef, current_node_id
from paretoforge.orchestrator.gate import GateClient, LocalGate
from paretoforge.pipeline.artifacts import artifact_path, result_from_manifest, verify_artifact
from paretoforge.pipeline.prepare import Prepared
from paretoforge.search_spaces import CandidateConfig
from paretoforge.spec import Spec

__all__ = ["ARTIFACT_FILES", "Worker", "package_versions"]

ARTIFACT_FILES = ("model.onnx", "model.safetensors", "config.json")
_LATENCY_SAMPLES = 64  # distinct real inputs cycled through by the latency protocol
_CALIBRATION_EXAMPLES = 128  # training examples that calibrate int8-static activations


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("paretoforge", "torch", "transformers", "onnx", "onnxruntime", "optuna", "ray",
                "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
# Quality is scored one example per call, as the profiles serve it: dynamic int8 derives its
# activation scales from the whole input tensor, so a batched score can differ from deployment.
_QUALITY_BATCH = 1


class Worker:
    """Builds and measures candidates; one per core (``index`` picks the core it is pinned to).

    Example:
        >>> w = Worker(prepared, spec.model_dump(mode="json"), "runs/x", index=0)  # doctest: +SKIP
        >>> w.evaluate(0, cfg.model_dump())  # doctest: +SKIP
    """

    def __init__(self, prepared: Prepared, spec: dict[str, Any], run_dir: str, *, index: int = 0,
                 gates: dict[str, Any] | None = None, holder: str = "", pin: bool = True,
                 benches: dict[str, list[BenchRef]] | None = None) -> None:
        import torch

        self.prepared = prepared
        self.spec = Spec.model_validate(spec)  # registers the spec's `hardware` profiles here
        self.run_dir = Path(run_dir)
        self.index = index
        self.node_id = current_node_id()
        # Profile name -> the benches on nodes that carry its resource (see bench.py); the
        # worker starts its round-robin over them at its own index, so workers spread out.
        self.benches = dict(benches or {})
        self._bench_turn = index
        self._benches_lost: set[str] = set()
        self._gates = dict(gates or {})
        handle = self._gates.get(self.node_id)
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

        from paretoforge.evaluators.size import onnx_size_bytes, param_count
        from paretoforge.kernels.export import export_onnx
        from paretoforge.kernels.ort import graph_summary
        from paretoforge.kernels.quantize import apply_precision
        from paretoforge.models.io import save_pretrained

        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        p = self.prepared
        final = self.run_dir / "artifacts" / cfg.key
        tmp = final.parent / f".{cfg.key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        train = p.feeds("train")
        embedding = p.task.metric == "embedding_cosine"
        try:
            with self.gate.shared():
                t0 = time.perf_counter()
                model, plan = self._build_torch(cfg, timings)
                t0 = time.perf_counter()
                save_pretrained(model, tmp, side_files_from=p.checkpoint_dir)
                import torch

                example = {k: torch.from_numpy(v[:1]) for k, v in train.items()}
                if embedding:
                    from paretoforge.tasks.embedding import Pooling

                    exported: Any = PooledEncoder(model, Pooling(**(p.pooling or {})))
                    out_name = "sentence_embedding"
                else:
                    exported, out_name = model, "logits"
                export_onnx(exported, example, tmp / "model_fp32.onnx", output_names=(out_name,))
                source = tmp / "model_fp32.onnx"
                fusions: dict[str, int] = {}
                if cfg.fusion:
                    fusions = self._fuse(cfg, model, source, tmp / "model_fused.onnx")
                    source = tmp / "model_fused.onnx"
                calibration = None
                if cfg.precision == "int8-static":  # activations calibrated on training inputs
                    calibration = {k: v[:_CALIBRATION_EXAMPLES] for k, v in train.items()}
                apply_precision(source, tmp / "model.onnx", cfg.precision,
                                calibration=calibration)
                (tmp / "model_fp32.onnx").unlink()
                (tmp / "model_fused.onnx").unlink(missing_ok=True)
                timings["export_s"] = time.perf_counter() - t0

                t0 = time.perf_counter()
                quality = p.score_onnx(tmp / "model.onnx", batch_size=_QUALITY_BATCH)
                timings["quality_s"] = time.perf_counter() - t0

            metrics: dict[str, float] = {
                p.task.metric: float(quality),
                "onnx_bytes": float(onnx_size_bytes(tmp / "model.onnx")),
                "params": float(param_count(model)),
            }
            t0 = time.perf_counter()
            rng = np.random.default_rng(trial_number)
            n_train = len(next(iter(train.values())))
            idx = rng.choice(n_train, size=min(_LATENCY_SAMPLES, n_train), replace=False)
            samples = {k: v[idx] for k, v in train.items()}
            measurements = {}
            placement = {}
            for name in self.spec.measured_profiles:
                m = self._measure(tmp / "model.onnx", name, samples)
                placement[name] = m.pop("placement")
                measurements[name] = m
                metrics[f"latency_p50_ms@{name}"] = m["p50_ms"]
                metrics[f"latency_p90_ms@{name}"] = m["p90_ms"]
                metrics[f"latency_mean_ms@{name}"] = m["mean_ms"]
            timings["measure_s"] = time.perf_counter() - t0

            # the whole build and measurement, waits for the node's gate included
            timings["total_s"] = time.perf_counter() - t_start
            width = (int(model.config.hidden_size) if embedding else p.task.num_classes)
            files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
            manifest = {
                "format": "paretoforge-artifact/1",
                "config": cfg.model_dump(mode="json"),
                "key": cfg.key,
                "plan": plan,
                "metrics": metrics,
                "measurements": measurements,
                # per profile: nodes per execution provider, fallbacks, unfused Q/DQ nodes
                "placement": placement,
                "quality_batch_size": _QUALITY_BATCH,
                "graph": graph_summary(tmp / "model.onnx"),
                # ONNX Runtime fusions applied before the precision step: {fused op: count}
                "fusions": fusions,
                "task": {"name": p.task.name, "metric": p.task.metric,
                         "heldout_split": p.task.split, "n_heldout": int(len(p.task.y_heldout))},
                "inputs": [{"name": k, "shape": ["batch", *v.shape[1:]], "dtype": str(v.dtype)}
                           for k, v in train.items()],
                "outputs": [{"name": out_name, "shape": ["batch", width], "dtype": "float32",
                             **({"pooling": p.pooling} if embedding else {})}],
                "preprocessing": p.task.preprocessing + (
                    f"; the checkpoint's tokenizer / preprocessing files, in this directory: "
                    f"{[f for f in files if f not in ARTIFACT_FILES]}" if p.checkpoint_dir
                    else ""),
                "base_model": p.base_info,
                "versions": package_versions(),
                "built_on": {"node_id": self.node_id, "host": socket.gethostname(),
                             "worker": self.index, "cores": self.cores},
                "timings": timings,
                "files": {f: sha256_file(tmp / f) for f in files},
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
        model = p.recover(model, self._base, self.spec.recovery, seed=self.spec.search.seed)
        timings["recovery_s"] = time.perf_counter() - t0
        return model, plan_json

    def _fuse(self, cfg: CandidateConfig, model: Any, src: Path, dst: Path) -> dict[str, int]:
        """ONNX Runtime's transformer fusions on the exported graph; the fusions applied."""
        from paretoforge.kernels.fusion import fuse

        if cfg.precision == "int8-static":
            # the static quantizer finds no valid activation scale for some fused-node inputs
            raise BuildError(
                f"candidate {cfg.key}: fusion is not supported with precision int8-static "
                "(static QDQ quantization of a fused graph fails); use fusion with fp32, int8, "
                "fp16 or int4, or leave int8-static unfused"
            )
        # every kept layer keeps heads_kept heads of the base model's head size
        head_size = int(model.config.hidden_size) // int(self.prepared.num_heads)
        return fuse(src, dst, str(model.config.model_type), num_heads=cfg.heads_kept,
                    hidden_size=cfg.heads_kept * head_size)

    def _measure(self, onnx_path: Path, profile_name: str,
                 inputs: dict[str, Any]) -> dict[str, Any]:
        """Measure ``profile_name`` here, or on a bench of a node that carries its resource.

        Here: profiles any node serves, and resource-bound CPU profiles when this worker's node
        carries the resource. A GPU profile always goes to its bench: the worker asked Ray for
        no GPU, so Ray hides the devices from it.
        """
        from paretoforge.hw_profiles import get_profile
        from paretoforge.orchestrator.bench import measure_profile

        profile = get_profile(profile_name)
        if profile.resource and self.benches.get(profile.name) and (
                profile.on_gpu or not _node_carries(self.node_id, profile.resource)):
            return self._measure_on_bench(onnx_path, profile, inputs)
        self._check_node_serves(profile)
        if profile.intra_op_threads is not None and profile.intra_op_threads <= len(self.cores):
            # Fits on this worker's own cores: the neighbours build on theirs meanwhile; the
            # shared hold keeps exclusive measurements (all-core profiles, benches) off the node.
            with self.gate.shared():
                return measure_profile(onnx_path, profile, inputs, cores=self.cores,
                                       node_id=self.node_id)
        # Needs more cores than this worker owns: hold every build on the node meanwhile.
        with self.gate.exclusive():
            return measure_profile(onnx_path, profile, inputs, cores=self.all_cores,
                                   node_id=self.node_id)

    def _measure_on_bench(self, onnx_path: Path, profile: Any,
                          inputs: dict[str, Any]) -> dict[str, Any]:
        """Send the artifact files and the samples to a bench of ``profile``; wait for the result.

        Benches are taken in turn; a lost one (its node left, its process died) is skipped from
        then on, its gate holds released, and the next one measures. The worker holds no gate
        while it waits, so a bench on this worker's node can take the node's gate.

        Raises:
            MeasurementError: the bench failed to measure, or every bench of the profile is lost.
        """
        import ray
        from ray.exceptions import RayTaskError

        from paretoforge.orchestrator.pool import is_worker_lost

        benches = [b for b in self.benches[profile.name] if b.holder not in self._benches_lost]
        if benches:
            turn = self._bench_turn % len(benches)
            self._bench_turn += 1
            benches = benches[turn:] + benches[:turn]
        # ONNX Runtime profiles need the graph; torch profiles load the PyTorch model instead.
        names = (("model.onnx",) if profile.runtime == "onnxruntime"
                 else ("model.onnx", "config.json", "model.safetensors"))
        files = {n: (onnx_path.parent / n).read_bytes() for n in names}
        lost = []
        for b in benches:
            try:
                return dict(ray.get(b.handle.measure.remote(files, profile.name, inputs)))
            except RayTaskError as e:  # the bench ran, and the measurement itself failed
                cause = e.cause if isinstance(e.cause, BaseException) else e
                kind = type(cause) if isinstance(cause, ParetoforgeError) else MeasurementError
                raise kind(f"profile {profile.name!r} on the bench of node {b.node_id[:12]}: "
                           f"{type(cause).__name__}: {cause}") from None
            except Exception as e:
                if not is_worker_lost(e):
                    raise
                self._benches_lost.add(b.holder)
                gate = self._gates.get(b.node_id)
                if gate is not None:  # a bench killed mid-measurement must not block its node
                    try:
                        gate.release_holder.remote(b.holder)
                    except Exception:  # the node (and its gate) is gone too
                        pass
                lost.append(f"node {b.node_id[:12]} ({type(e).__name__})")
        raise MeasurementError(
            f"profile {profile.name!r}: no bench is left to measure it"
            f"{' (lost: ' + ', '.join(lost) + ')' if lost else ''}; every node with Ray resource "
            f"{profile.resource!r} left the cluster or its bench process died. Restart the "
            "search (`paretoforge resume`) once such a node is back"
        )

    def _check_node_serves(self, profile: Any) -> None:
        """A profile bound to a Ray resource is never measured silently on another node."""
        if not profile.resource or _node_carries(self.node_id, profile.resource):
            return
        raise MeasurementError(
            f"profile {profile.name!r} needs Ray resource {profile.resource!r}, which this "
            f"worker's node {self.node_id[:12]} does not carry, and the worker was given no "
            "bench for it; it is not measured elsewhere (the driver starts a bench on every "
            "node that carries the resource)"
        )


def PooledEncoder(model: Any, pooling: Any) -> Any:  # noqa: N802  (a class, built lazily)
    """``model`` (an encoder) whose output is the pooled sentence embedding, for ONNX export:
    ``forward(input_ids, attention_mask, ...) -> pooling(last_hidden_state, attention_mask)``
    (L2-normalised when the checkpoint's pooling says so)."""
    import torch

    class _Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model
            self.pooling = pooling

        def forward(self, **inputs: Any) -> Any:
            out = self.encoder(**inputs)
            hidden = getattr(out, "last_hidden_state", None)
            hidden = out[0] if hidden is None else hidden
            return self.pooling(hidden, inputs["attention_mask"])

    return _Pooled()


def _node_carries(node_id: str, resource: str) -> bool:
    """Whether Ray node ``node_id`` carries ``resource`` (False outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            for node in ray.nodes():
                if node.get("NodeID") == node_id:
                    return float(node.get("Resources", {}).get(resource, 0)) > 0
    except Exception:  # no Ray: no resources
        pass
    return False
