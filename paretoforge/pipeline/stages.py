"""The stages of a candidate's build, in the order they run, each a plain function.

    derive  (surgery: importance-ranked dense pruning of the base)   -> Weights
    recover (distillation from the base on the training split)        -> Weights
    export  (safetensors + config.json, the task's head traced to ONNX, or its weights written
             into the graph of a structure traced before; a decoder: its KV-cache graph)
                                                                       -> Exported
    passes  (ONNX Runtime fusions, then the precision)                -> Graph
    score   (the task's quality metric on the validation split, ONNX Runtime) -> float
    measure (latency per profile, through the caller's measurer; a decoder: prefill and
             one decode step)                                          -> Measured

Each stage's output has a content key (:func:`stage_key`) made of what determines it: the
base model, the part of the config the stage reads, and the key of the stage before it. Two
candidates that differ only in their graph passes (precision, fusion) share the keys of
derive, recover and export, so :class:`~paretoforge.pipeline.cache.StageCache` serves the
recovered model and its export to the second one without retraining.

Every stage reads the task through the :class:`~paretoforge.tasks.Task` contract: what it
exports, how it is scored, which distillation loss recovers it. Nothing here names a task.

Example:
    >>> ctx = BuildContext(prepared, recovery=spec.recovery, seed=0)  # doctest: +SKIP
    >>> w = recover(ctx, derive(ctx, cfg))  # doctest: +SKIP
    >>> exp = export(ctx, w, out_dir)  # doctest: +SKIP
    >>> g = passes(ctx, exp, cfg, out_dir / "model.onnx")  # doctest: +SKIP
    >>> score(ctx, g.path)  # doctest: +SKIP
    0.98
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paretoforge.exceptions import BuildError
from paretoforge.kernels.export_template import ExportTemplates
from paretoforge.pipeline.prepare import Prepared
from paretoforge.search_spaces import CandidateConfig

__all__ = ["ARTIFACT_FILES", "QUALITY_BATCH", "BuildContext", "Exported", "Graph", "Measured",
           "Resume", "Weights", "custom_values", "derive", "export", "export_key",
           "latency_samples", "measure", "passes", "recover", "reference_artifact", "score",
           "stage_key"]

ARTIFACT_FILES = ("model.onnx", "model.safetensors", "config.json")
# Quality is scored one example per call, as the profiles serve it: dynamic int8 derives its
# activation scales from the whole input tensor, so a batched score can differ from deployment.
QUALITY_BATCH = 1
LATENCY_SAMPLES = 64  # distinct real inputs cycled through by the latency protocol
CALIBRATION_EXAMPLES = 128  # training examples that calibrate int8-static activations

# This process's traced graphs by structure: a sub-network of a structure exported before
# gets its weights written into that graph instead of a new trace.
EXPORT_TEMPLATES = ExportTemplates()

# The config fields each weight stage reads (the rest act later, on the graph).
_STRUCTURE = ("layers_kept", "heads_kept", "ffn_kept")


def stage_key(stage: str, *parts: Any) -> str:
    """A stable content key: sha256 of the stage name and its JSON-able inputs, 16 hex digits.

    Example:
        >>> stage_key("derive", "b4se", {"layers_kept": 2}) == stage_key(
        ...     "derive", "b4se", {"layers_kept": 2})
        True
    """
    blob = json.dumps([stage, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Resume:
    """Weights a recovery continues from: a finishing trial of the rung before (ASHA's resume).

    Attributes:
        key: That trial's artifact key (``<config key>-r<epochs>``).
        epochs: The recovery epochs those weights have had.
        weights: Its ``model.safetensors``, as bytes.
    """

    key: str
    epochs: int
    weights: bytes = field(repr=False)


class BuildContext:
    """What every stage of one worker's builds shares: the prepared bundle, the recovery
    recipe, the seed, and the base model and importance, loaded once on first use.

    Args:
        prepared: The driver's :class:`~paretoforge.pipeline.prepare.Prepared` bundle.
        recovery: The spec's :class:`~paretoforge.spec.RecoverySpec`.
        seed: The search seed (distillation's data order and dropout).
    """

    def __init__(self, prepared: Prepared, *, recovery: Any, seed: int) -> None:
        self.prepared = prepared
        self.recovery = recovery
        self.seed = int(seed)
        self.task = prepared.task_impl
        self._base: Any = None
        self._importance: Any = None
        self._supernet: Any = None
        self._supernet_importance: Any = None
        self._teacher_cache: Any = None
        self.resume: Resume | None = None  # a finishing rung continuing the one before

    def with_recovery_epochs(self, epochs: int, *, resume: Resume | None = None
                             ) -> BuildContext:
        """The same context (its loaded models shared) with ``epochs`` of recovery: a
        finishing trial's budget; with ``resume``, the pruned student starts from those
        weights and trains the ``epochs - resume.epochs`` still missing."""
        ctx = BuildContext(self.prepared, recovery=self.recovery.model_copy(
            update={"epochs": int(epochs)}), seed=self.seed)
        ctx.share_loaded(self)
        ctx.resume = resume
        return ctx

    def share_loaded(self, other: BuildContext) -> None:
        """Use the models ``other`` has loaded: its base and importance (the same base), and
        its supernet when both contexts have the same one."""
        if other.prepared.base_key != self.prepared.base_key:
            return
        self._base, self._importance = other._base, other._importance
        self._teacher_cache = other.teacher_cache  # the same base: the same teacher
        mine = getattr(self.prepared, "supernet", None)
        theirs = getattr(other.prepared, "supernet", None)
        if mine is not None and theirs is not None and mine["key"] == theirs["key"]:
            self._supernet, self._supernet_importance = (other._supernet,
                                                         other._supernet_importance)

    @property
    def one_shot(self) -> bool:
        """Whether pruned candidates are cut from a trained supernet (one-shot search)."""
        return getattr(self.prepared, "supernet", None) is not None

    @property
    def source(self) -> Any:
        """The model pruned candidates are cut from: the supernet when there is one (its
        heads and neurons rewired by importance), else the base."""
        if not self.one_shot:
            return self.base
        if self._supernet is None:
            self._supernet = self.prepared.load_supernet()
        return self._supernet

    @property
    def source_importance(self) -> Any:
        """The importance ranking of :attr:`source` (the supernet's rewired one, or the
        base's)."""
        if not self.one_shot:
            return self.importance
        if self._supernet_importance is None:
            from paretoforge.models.importance import Importance

            self._supernet_importance = Importance.from_dict(
                self.prepared.supernet["importance"])
        return self._supernet_importance

    @property
    def teacher_cache(self) -> Any:
        """The base's outputs on the training split, kept between recoveries
        (:class:`~paretoforge.models.distill.TeacherCache`)."""
        if self._teacher_cache is None:
            from paretoforge.models.distill import TeacherCache

            self._teacher_cache = TeacherCache()
        return self._teacher_cache

    @property
    def base(self) -> Any:
        """The unpruned base model (rebuilt from safetensors once)."""
        if self._base is None:
            self._base = self.prepared.load_base()
        return self._base

    @property
    def importance(self) -> Any:
        """The base model's :class:`~paretoforge.models.importance.Importance`."""
        if self._importance is None:
            from paretoforge.models.importance import Importance

            self._importance = Importance.from_dict(self.prepared.importance)
        return self._importance


@dataclass
class Weights:
    """A candidate's PyTorch model and the pruning plan it came from."""

    model: Any
    plan: dict[str, Any]
    key: str
    pruned: bool  # False: the unpruned base itself


@dataclass
class Exported:
    """The weights on disk: ``model.safetensors`` + ``config.json`` (+ the checkpoint's side
    files) and the fp32 ONNX graph of the task's head, in the build's directory. For a
    decoder (the task's head sets ``decode_past``) the graph is the KV-cache graph, and
    ``cache_layout`` is its :meth:`~paretoforge.kernels.decoder_export.CacheLayout.as_dict`."""

    onnx_fp32: Path
    output: dict[str, Any]  # name, shape, dtype, extra
    params: int
    hidden_size: int
    model_type: str
    key: str
    cache_layout: dict[str, Any] | None = None
    decode_past: int | None = None
    #: ``traced`` (torch.onnx) or ``template`` (the weights written into the graph of an
    #: earlier trace of the same structure: :class:`~paretoforge.kernels.export_template.
    #: ExportTemplates`)
    method: str = "traced"


@dataclass
class Graph:
    """The deployable ONNX graph after the graph passes."""

    path: Path
    fusions: dict[str, int]
    key: str


@dataclass
class Measured:
    """Latency per profile: metrics, the measurements, and where each ran (placement)."""

    metrics: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    placement: dict[str, Any] = field(default_factory=dict)


# -- weights ------------------------------------------------------------------------------


def derive(ctx: BuildContext, cfg: CandidateConfig) -> Weights:
    """Dense surgery ranked by importance (Michel et al.): the kept layers, heads and FFN
    neurons of the base, as smaller dense tensors. The unpruned config is the base itself."""
    from paretoforge.models.surgery import plan_from_importance, prune

    p = ctx.prepared
    unpruned = cfg.is_unpruned(p.num_layers, p.num_heads)
    # One-shot: a pruned candidate is cut from the supernet; the unpruned one stays the base.
    from_supernet = ctx.one_shot and not unpruned
    plan = plan_from_importance(ctx.source_importance if from_supernet else ctx.importance,
                                layers_kept=cfg.layers_kept, heads_kept=cfg.heads_kept,
                                ffn_kept=cfg.ffn_kept)
    plan_json = {"layers": list(plan.layers), "heads": [list(h) for h in plan.heads],
                 "neurons_per_layer": [len(n) for n in plan.neurons]}
    structure: dict[str, Any] = {k: getattr(cfg, k) for k in _STRUCTURE}
    custom = custom_values(cfg, "derive")
    if custom:  # absent when none, so keys of configs without custom dimensions stay
        structure["custom"] = dict(custom)
    source = p.supernet["key"] if from_supernet else p.base_key
    key = stage_key("derive", source, structure)
    if from_supernet:
        plan_json["source"] = f"supernet:{source}"
    if unpruned and not custom:
        return Weights(model=ctx.base, plan=plan_json, key=key, pruned=False)
    if ctx.resume is not None:  # recover continues these weights (see recover)
        plan_json["resumed_from"] = {"artifact": ctx.resume.key, "epochs": ctx.resume.epochs}
    model = (copy.deepcopy(ctx.base) if unpruned
             else prune(ctx.source if from_supernet else ctx.base, plan))
    for dim, value in _applied(custom):  # the user's derive dimensions, on the student
        model = _call(dim, value, dim.apply, model, value)
    return Weights(model=model, plan=plan_json, key=key, pruned=True)


def recover_key(ctx: BuildContext, derived_key: str) -> str:
    """The content key of :func:`recover`'s output for the weights of ``derived_key``."""
    recovery = ctx.recovery.model_dump(mode="json")
    if ctx.resume is not None:  # absent otherwise, so the keys of other recoveries stay
        return stage_key("recover", derived_key, recovery, ctx.seed,
                         {"resume": ctx.resume.key, "epochs": ctx.resume.epochs})
    return stage_key("recover", derived_key, recovery, ctx.seed)


def recover(ctx: BuildContext, weights: Weights) -> Weights:
    """Distil the base into the pruned student on the training split, with the loss the task
    asks for (:meth:`~paretoforge.tasks.Task.distill_options`). The base is returned as is.

    With ``ctx.resume`` the student first takes those weights (the same shapes: the same
    config, recovered by the rung before) and trains the epochs still missing, on a fresh
    warm-up and cosine schedule and a data order seeded ``seed + resume.epochs``."""
    key = recover_key(ctx, weights.key)
    r = ctx.recovery
    if not weights.pruned or r.epochs <= 0:
        return Weights(model=weights.model, plan=weights.plan, key=key, pruned=weights.pruned)
    from paretoforge.models.distill import distill

    model, epochs, seed = weights.model, r.epochs, ctx.seed
    if ctx.resume is not None:
        from paretoforge.models.io import load_weights_bytes

        load_weights_bytes(model, ctx.resume.weights, what=f"artifact {ctx.resume.key}")
        epochs, seed = r.epochs - ctx.resume.epochs, ctx.seed + ctx.resume.epochs
        if epochs <= 0:
            return Weights(model=model.eval(), plan=weights.plan, key=key, pruned=True)
    data, state = ctx.prepared.task, ctx.prepared.task_state
    options = ctx.task.distill_options(data, state, r)
    labels = options.pop("labels", None)
    model = distill(model, ctx.base, data.x_train, labels, epochs=epochs, lr=r.lr,
                    temperature=r.temperature, alpha=r.alpha, batch_size=r.batch_size,
                    seed=seed, hidden_weight=r.hidden_weight,
                    teacher_cache=ctx.teacher_cache, **options)
    return Weights(model=model, plan=weights.plan, key=key, pruned=True)


# -- graph ---------------------------------------------------------------------------------


def export_key(ctx: BuildContext, recovered_key: str, cfg: CandidateConfig | None = None) -> str:
    """The content key of :func:`export`'s output: the recovered weights, the task, and the
    values of custom ``export`` dimensions (absent when none)."""
    custom = custom_values(cfg, "export") if cfg is not None else ()
    if custom:
        return stage_key("export", recovered_key, ctx.task.name, dict(custom))
    return stage_key("export", recovered_key, ctx.task.name)


def export(ctx: BuildContext, weights: Weights, out: Path,
           cfg: CandidateConfig | None = None) -> Exported:
    """Write ``model.safetensors`` + ``config.json`` (+ the checkpoint's tokenizer / pooling
    files) into ``out`` and trace the task's export head to ``out/model_fp32.onnx``.

    A head with ``decode_past`` (a decoder that generates) is exported with
    :func:`~paretoforge.kernels.decoder_export.export_decoder_onnx`: one KV-cache graph for
    prefill and decode, checked against PyTorch, whose cache layout the manifest records.

    Custom ``export`` dimensions of ``cfg`` act first, on a copy of the recovered model (the
    stage cache keeps the recovered model for other candidates)."""
    import torch

    from paretoforge.evaluators.size import param_count
    from paretoforge.kernels.export_template import structure_signature
    from paretoforge.models.io import save_pretrained

    p = ctx.prepared
    model = weights.model
    custom = custom_values(cfg, "export") if cfg is not None else ()
    if custom:
        model = copy.deepcopy(model)
        for dim, value in _applied(custom):
            model = _call(dim, value, dim.apply, model, value)
    save_pretrained(model, out, side_files_from=p.checkpoint_dir)
    head = ctx.task.export_head(model, p.task_state, p.task)
    onnx_fp32 = out / "model_fp32.onnx"
    layout, method = None, "traced"
    if head.decode_past is not None:
        from paretoforge.kernels.decoder_export import export_decoder_onnx

        layout = export_decoder_onnx(head.module, onnx_fp32).as_dict()
    else:
        example = {k: torch.from_numpy(v[:1]) for k, v in p.feeds("train").items()}
        # token inputs (beside a 2-D attention mask) get a symbolic length: the quality
        # evaluation feeds each batch trimmed to its own length (onnx_logits); latency is
        # still measured at the task's full length
        mask = example.get("attention_mask")
        tokens = [k for k, v in example.items() if v.dim() == 2 and v.shape == mask.shape
                  ] if mask is not None and mask.dim() == 2 else []
        signature = structure_signature(head.module, example, type(ctx.task).__qualname__,
                                        head.output_name, tuple(tokens), repr(custom))
        method = EXPORT_TEMPLATES.export(head.module, example, onnx_fp32, signature=signature,
                                         output_names=(head.output_name,),
                                         dynamic_sequence=tokens)
    return Exported(
        onnx_fp32=onnx_fp32,
        output={"name": head.output_name, "shape": ["batch", *head.output_shape],
                "dtype": "float32", **head.extra},
        params=int(param_count(model)), hidden_size=int(model.config.hidden_size),
        model_type=str(model.config.model_type),
        key=export_key(ctx, weights.key, cfg),
        cache_layout=layout, decode_past=head.decode_past, method=method,
    )


def passes(ctx: BuildContext, exported: Exported, cfg: CandidateConfig, dst: Path) -> Graph:
    """ONNX Runtime's transformer fusions (when ``cfg.fusion``), then the custom ``passes``
    dimensions of ``cfg`` (in name order, each ``apply(onnx_in, onnx_out, value)``), then the
    precision (fp32, dynamic / static int8, fp16, int4), into ``dst``; the intermediate
    graphs are removed."""
    from paretoforge.kernels.quantize import apply_precision

    src = exported.onnx_fp32
    fusions: dict[str, int] = {}
    fused = dst.parent / "model_fused.onnx"
    custom = custom_values(cfg, "passes")
    steps = [dst.parent / f"model_pass{i}.onnx" for i in range(len(custom))]
    try:
        if cfg.fusion:
            fusions = _fuse(ctx, exported, cfg, src, fused)
            src = fused
        for (dim, value), step in zip(_applied(custom), steps, strict=True):
            _call(dim, value, dim.apply, src, step, value)
            if not step.is_file():
                raise BuildError(f"candidate {cfg.key}: custom dimension {dim.name!r} "
                                 f"({dim.module}) wrote no graph to {step.name}; its apply("
                                 "onnx_in, onnx_out, value) must write onnx_out")
            src = step
        calibration = None
        if cfg.precision == "int8-static":  # activations calibrated on training inputs
            calibration = {k: v[:CALIBRATION_EXAMPLES]
                           for k, v in ctx.prepared.feeds("train").items()}
            if exported.cache_layout is not None:  # a decoder: prefills of those blocks
                from paretoforge.kernels.decoder_export import CacheLayout, complete_feeds

                calibration = complete_feeds(CacheLayout.from_dict(exported.cache_layout),
                                             calibration)
        apply_precision(src, dst, cfg.precision, calibration=calibration,
                        int4_accuracy_level=cfg.int4_accuracy_level)
    finally:
        fused.unlink(missing_ok=True)
        for step in steps:
            step.unlink(missing_ok=True)
    # the int4 accuracy level joins the key only when set, so other keys are as they were
    precision: Any = (cfg.precision if not cfg.int4_accuracy_level
                      else [cfg.precision, cfg.int4_accuracy_level])
    key = (stage_key("passes", exported.key, cfg.fusion, precision, dict(custom))
           if custom else stage_key("passes", exported.key, cfg.fusion, precision))
    return Graph(path=dst, fusions=fusions, key=key)


def custom_values(cfg: CandidateConfig, stage: str) -> tuple[tuple[str, Any], ...]:
    """``cfg``'s custom dimension values (not at their default) that act at ``stage``.

    Raises:
        BuildError: a value names a dimension not registered in this process.
    """
    from paretoforge.search_spaces import DIMENSIONS

    out = []
    for name, value in cfg.custom:
        if name not in DIMENSIONS:
            raise BuildError(f"candidate {cfg.key}: custom dimension {name!r} is not "
                             f"registered here; {DIMENSIONS.unknown_message(name)} Name the "
                             "module that registers it under space.modules")
        if DIMENSIONS.get(name).stage == stage:
            out.append((name, value))
    return tuple(out)


def _applied(custom: tuple[tuple[str, Any], ...]) -> list[tuple[Any, Any]]:
    from paretoforge.search_spaces import DIMENSIONS

    return [(DIMENSIONS.get(name), value) for name, value in custom]


def _call(dim: Any, value: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """A custom dimension's ``apply``; its failure is a BuildError naming the dimension."""
    try:
        out = fn(*args)
    except BuildError:
        raise
    except Exception as e:
        raise BuildError(f"custom dimension {dim.name!r} ({dim.module}) failed at value "
                         f"{value!r}: {type(e).__name__}: {e}") from e
    if dim.stage in ("derive", "export") and out is None:
        raise BuildError(f"custom dimension {dim.name!r} ({dim.module}): apply(model, value) "
                         "returned None; return the (changed) model")
    return out


def _fuse(ctx: BuildContext, exported: Exported, cfg: CandidateConfig, src: Path,
          dst: Path) -> dict[str, int]:
    from paretoforge.kernels.fusion import fuse

    if cfg.precision == "int8-static":
        # the static quantizer finds no valid activation scale for some fused-node inputs
        raise BuildError(
            f"candidate {cfg.key}: fusion is not supported with precision int8-static "
            "(static QDQ quantization of a fused graph fails); use fusion with fp32, int8, "
            "fp16 or int4, or leave int8-static unfused"
        )
    if isinstance(cfg.heads_kept, tuple):  # heads differ per layer: the optimizer reads
        return fuse(src, dst, exported.model_type, num_heads=0, hidden_size=0)  # each's shape
    # every kept layer keeps heads_kept heads of the base model's head size
    head_size = exported.hidden_size // int(ctx.prepared.num_heads)
    return fuse(src, dst, exported.model_type, num_heads=cfg.heads_kept,
                hidden_size=cfg.heads_kept * head_size)


# -- numbers -------------------------------------------------------------------------------


def score(ctx: BuildContext, onnx_path: Path, *, batch_size: int = QUALITY_BATCH,
          session: Any = None) -> float:
    """The task's quality metric of the ONNX model on the validation split, on ONNX Runtime,
    ``batch_size`` examples per call (default 1, as deployed). This is the search's value;
    the test split is scored after the search (:func:`paretoforge.pipeline.score_test`).
    ``session``: an open session of the graph with the quality settings
    (:func:`~paretoforge.evaluators.quality.onnx_logits`), instead of a new one."""
    from paretoforge.evaluators.quality import onnx_logits

    p = ctx.prepared
    out = onnx_logits(onnx_path, p.feeds("validation"), batch_size=batch_size, session=session)
    return float(ctx.task.score(out, p.task.scoring("validation"), p.task_state))


def latency_samples(ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """The real training inputs the latency protocol cycles through, and their record.

    The same for every candidate of a search (seeded by the search seed, not the trial), so
    that candidates are timed on the same inputs.
    """
    import numpy as np

    train = ctx.prepared.feeds("train")
    rng = np.random.default_rng(ctx.seed)
    n_train = len(next(iter(train.values())))
    idx = np.sort(rng.choice(n_train, size=min(LATENCY_SAMPLES, n_train), replace=False))
    record = {"split": "train", "n": int(len(idx)), "seed": ctx.seed,
              "indices_sha256": hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()}
    return {k: v[idx] for k, v in train.items()}, record


def reference_artifact(ctx: BuildContext, run_dir: str | Path) -> Path:
    """The base model's fp32 artifact that every candidate of the run is timed against.

    Built once per run through the stages (the unpruned config: derive, export, fp32 graph,
    no fusion) into ``<run_dir>/reference/<base key>/`` (``model.onnx``, ``config.json``,
    ``model.safetensors``); a worker that finds it there reuses it. Workers that build it at
    the same time each write a temporary directory, and the first rename wins.

    Returns:
        The artifact directory.
    """
    import os

    p = ctx.prepared
    final = Path(run_dir) / "reference" / str(p.base_key)
    if (final / "model.onnx").is_file():
        return final
    cfg = CandidateConfig(layers_kept=p.num_layers, heads_kept=p.num_heads, ffn_kept=1.0,
                          precision="fp32")
    tmp = final.parent / f".{p.base_key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        exported = export(ctx, derive(ctx, cfg), tmp)
        passes(ctx, exported, cfg, tmp / "model.onnx")
        exported.onnx_fp32.unlink(missing_ok=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another worker's rename came first: theirs is the same artifact
            if not (final / "model.onnx").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


Measurer = Callable[..., dict[str, Any]]  # (path, profile, samples, *, precision) -> result


def measure(onnx_path: Path, profiles: Iterable[str], samples: dict[str, Any],
            measurer: Measurer, *, precision: str = "fp32",
            decode_past: int | None = None) -> Measured:
    """Latency of the graph on every profile, each through ``measurer(path, profile,
    samples, precision=...)`` (the worker decides where: its own core, all cores, or a
    bench; a torch profile builds the candidate's precision in PyTorch).

    ``latency_p50_ms@PROFILE``, the figure a search ranks by, is the drift-free median
    (``drift_free_p50_ms``: the candidate's latency relative to the base's, measured round by
    round beside it, times the run's one base latency) when the measurer gives one, else the
    absolute median; ``latency_p50_abs_ms@PROFILE`` is the absolute median either way.
    ``latency_p90_ms`` and ``latency_mean_ms`` are absolute. For a decoder graph these time a
    prefill of one block of ``samples``.

    With ``decode_past`` (a KV-cache decoder graph) every ONNX Runtime profile is measured a
    second time, through ``measurer(..., decode_past=decode_past)``: one decode step after
    that many cached tokens, by the same protocol beside the reference's decode step.
    ``decode_ms_per_token@PROFILE`` is its drift-free median (else the absolute one) and
    ``decode_abs_ms_per_token@PROFILE`` the absolute median; the record is the profile's
    measurement's ``decode``. On a CPU profile, a decoder's ``peak_memory_mb@PROFILE`` is the
    resident memory its session adds at its peak over creation, a prefill of ``decode_past``
    tokens and 8 decode steps (:func:`~paretoforge.evaluators.memory.session_peak_memory`,
    in this process, at the profile's threads); the record is the measurement's ``memory``.
    """
    from paretoforge.hw_profiles import get_profile

    out = Measured()
    for name in profiles:
        m = dict(measurer(onnx_path, name, samples, precision=precision))
        out.placement[name] = m.pop("placement", {})
        out.measurements[name] = m
        ranked = m.get("drift_free_p50_ms")
        out.metrics[f"latency_p50_ms@{name}"] = m["p50_ms"] if ranked is None else ranked
        out.metrics[f"latency_p50_abs_ms@{name}"] = m["p50_ms"]
        out.metrics[f"latency_p90_ms@{name}"] = m["p90_ms"]
        out.metrics[f"latency_mean_ms@{name}"] = m["mean_ms"]
        if decode_past is None or get_profile(name).runtime != "onnxruntime":
            continue
        d = dict(measurer(onnx_path, name, samples, precision=precision,
                          decode_past=decode_past))
        d.pop("placement", None)  # the same graph's placement, reported with the prefill
        m["decode"] = d
        ranked = d.get("drift_free_p50_ms")
        out.metrics[f"decode_ms_per_token@{name}"] = d["p50_ms"] if ranked is None else ranked
        out.metrics[f"decode_abs_ms_per_token@{name}"] = d["p50_ms"]
        profile = get_profile(name)
        if profile.device == "cpu":
            import os

            from paretoforge.evaluators.memory import session_peak_memory

            mem = session_peak_memory(onnx_path, prompt_tokens=decode_past,
                                      intra_op_threads=profile.threads_for(
                                          len(os.sched_getaffinity(0))),
                                      provider=profile.provider)
            m["memory"] = mem
            out.metrics[f"peak_memory_mb@{name}"] = mem["peak_mb"]
    return out


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the files of ``src`` into ``dst`` (which may exist), keeping subfolders."""
    for f in src.rglob("*"):
        if f.is_file():
            target = dst / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
