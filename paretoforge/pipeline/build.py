"""One candidate's build, start to finish: the one place a candidate is built.

:func:`build_candidate` runs the stages of :mod:`paretoforge.pipeline.stages` in order,
times each, serves derive / recover / export from the :class:`StageCache` when their content
key was built before, writes the artifact into a temporary directory with its
:class:`~paretoforge.manifest.Manifest` (sha256 of every file) and renames it into
``<run>/artifacts/<config key>/``. Where the build runs (pinning, the node's core gate, which
node measures a profile) is the caller's: it passes ``building`` (held around the weight and
graph stages) and ``measurer`` (one profile's measurement).

Example:
    >>> ctx = BuildContext(prepared, recovery=spec.recovery, seed=0)  # doctest: +SKIP
    >>> manifest = build_candidate(ctx, cfg, run_dir="runs/x", profiles=["cpu-1t"],
    ...                            measurer=measure_here)  # doctest: +SKIP
    >>> manifest.metrics["latency_p50_ms@cpu-1t"]  # doctest: +SKIP
    0.041
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from paretoforge._io import sha256_file
from paretoforge.manifest import Manifest, StageRecord
from paretoforge.pipeline import stages as st
from paretoforge.pipeline.artifacts import artifact_path
from paretoforge.pipeline.cache import StageCache
from paretoforge.search_spaces import CandidateConfig

__all__ = ["build_candidate", "package_versions"]


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    out = [("python", platform.python_version())]
    for pkg in ("paretoforge", "torch", "transformers", "onnx", "onnxruntime", "optuna", "ray",
                "numpy"):
        try:
            out.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(out)


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a build depends on (read once per process:
    the package metadata cost 7 ms a build)."""
    return dict(_versions())


class _Timer:
    """Records each stage: name, key, seconds, cache hit; and the legacy ``timings``."""

    def __init__(self) -> None:
        self.stages: list[StageRecord] = []
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, timing: str | None = None) -> Iterator[StageRecord]:
        rec = StageRecord(name=name)
        t0 = time.perf_counter()
        try:
            yield rec
        finally:
            rec.seconds = time.perf_counter() - t0
            self.stages.append(rec)
            if timing is not None:
                self.timings[timing] = self.timings.get(timing, 0.0) + rec.seconds


def build_candidate(ctx: st.BuildContext, cfg: CandidateConfig, *, run_dir: str | Path,
                    profiles: list[str], measurer: st.Measurer,
                    building: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                    built_on: dict[str, Any] | None = None,
                    cache: StageCache | None = None,
                    artifact_key: str | None = None,
                    quality_session: Callable[[Path], Any] | None = None) -> Manifest:
    """Build, score and measure ``cfg``; commit its artifact; return its manifest.

    Args:
        ctx: The worker's :class:`~paretoforge.pipeline.stages.BuildContext`.
        cfg: The candidate.
        run_dir: The run directory; the artifact goes to ``artifacts/<cfg.key>/`` in it.
        profiles: The profiles to measure, in order.
        measurer: ``measurer(onnx_path, profile, samples, precision=...)``: one profile's
            measurement (the latency protocol's JSON plus ``placement``).
        building: Held around the weight and graph stages (e.g. the node's gate, shared).
        built_on: Where it was built (node, host, worker, cores), for the manifest.
        cache: The worker's stage cache (None: nothing is reused).
        artifact_key: The artifact's key and directory name (default ``cfg.key``; a
            finishing trial's is ``<cfg.key>-r<epochs>``).
        quality_session: ``quality_session(onnx_path)``: an open session of the final graph
            with the quality settings that the scoring uses instead of opening its own, or
            None (e.g. the worker's session that its screening measurement then times).

    Raises:
        BuildError: a stage failed (surgery, recovery, export, passes).
        MeasurementError: a profile could not be measured.
    """
    building = building or contextlib.nullcontext
    t_start = time.perf_counter()
    timer = _Timer()
    p = ctx.prepared
    key = artifact_key or cfg.key
    final = artifact_path(run_dir, key)
    tmp = final.parent / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with building():
            exported, plan = _weights_and_export(ctx, cfg, tmp, timer, cache)
            with timer.stage("passes", "export_s") as rec:
                graph = st.passes(ctx, exported, cfg, tmp / "model.onnx")
                exported.onnx_fp32.unlink(missing_ok=True)
                rec.key = graph.key
            with timer.stage("score", "quality_s"):
                session = quality_session(graph.path) if quality_session is not None else None
                quality = st.score(ctx, graph.path, session=session)

        from paretoforge.evaluators.size import onnx_size_bytes
        from paretoforge.kernels.ort import graph_summary

        metrics: dict[str, float] = {
            p.task.metric: float(quality),
            "onnx_bytes": float(onnx_size_bytes(graph.path)),
            "params": float(exported.params),
        }
        with timer.stage("measure", "measure_s"):
            samples, latency_inputs = st.latency_samples(ctx)
            measured = st.measure(graph.path, profiles, samples, measurer,
                                  precision=cfg.precision, decode_past=exported.decode_past)
        metrics.update(measured.metrics)
        # the whole build and measurement, waits for the node's gate included
        timer.timings["total_s"] = time.perf_counter() - t_start
        files = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file())
        side = [f for f in files if f not in st.ARTIFACT_FILES]
        train = p.feeds("train")
        inputs = [{"name": k, "shape": ["batch", *v.shape[1:]], "dtype": str(v.dtype)}
                  for k, v in train.items()]
        summary = graph_summary(graph.path)
        if exported.cache_layout is not None:  # the decoder graph's inputs, past included
            inputs = list(summary["inputs"])
        manifest = Manifest(
            config=cfg.model_dump(mode="json"), key=key, plan=plan,
            metrics=metrics, measurements=measured.measurements,
            placement=measured.placement, quality_batch_size=st.QUALITY_BATCH,
            graph=summary, fusions=graph.fusions,
            task={"name": p.task.name, "metric": p.task.metric,
                  "heldout_split": p.task.split, "n_heldout": int(p.task.split.get(
                      "n_heldout", len(p.task.y_validation))),
                  "metrics_split": "validation",
                  "n_validation": int(len(p.task.y_validation))},
            inputs=inputs, outputs=[exported.output], cache_layout=exported.cache_layout,
            preprocessing=p.task.preprocessing + (
                f"; the checkpoint's tokenizer / preprocessing files, in this directory: "
                f"{side}" if p.checkpoint_dir else ""),
            base_model=p.base_info, versions=package_versions(),
            latency_inputs=latency_inputs,
            built_on=dict(built_on or {}), timings=timer.timings, stages=timer.stages,
            files={f: sha256_file(tmp / f) for f in files},
        )
        manifest.write(tmp / "manifest.json")
        if final.exists():  # an earlier identical build (e.g. a retried trial): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _weights_and_export(ctx: st.BuildContext, cfg: CandidateConfig, tmp: Path, timer: _Timer,
                        cache: StageCache | None) -> tuple[st.Exported, dict[str, Any]]:
    """derive -> recover -> export, each from the stage cache when its key was built."""
    with timer.stage("derive", "surgery_s") as rec:
        derived = st.derive(ctx, cfg)
        rec.key = derived.key
    rkey = st.recover_key(ctx, derived.key)
    ekey = st.export_key(ctx, rkey, cfg)
    hit = cache.get_export(ekey) if cache is not None else None
    if hit is not None:  # same weights built before: its files, no retraining
        with timer.stage("recover", "recovery_s") as rec:
            rec.key, rec.cached = rkey, True
        with timer.stage("export", "export_s") as rec:
            src, meta = hit
            st.copy_tree(src, tmp)
            rec.key, rec.cached = ekey, True
            return st.Exported(**{**vars(meta), "onnx_fp32": tmp / meta.onnx_fp32.name}), \
                derived.plan
    with timer.stage("recover", "recovery_s") as rec:
        model = cache.get_model(rkey) if cache is not None else None
        if model is not None:
            weights = st.Weights(model=model, plan=derived.plan, key=rkey, pruned=derived.pruned)
            rec.cached = True
        else:
            weights = st.recover(ctx, derived)
            if cache is not None and weights.pruned:
                cache.put_model(rkey, weights.model)
        rec.key = weights.key
    with timer.stage("export", "export_s") as rec:
        exported = st.export(ctx, weights, tmp, cfg)
        rec.key, rec.method = exported.key, exported.method
        if cache is not None:
            cache.put_export(exported.key, tmp, exported)
    return exported, derived.plan
