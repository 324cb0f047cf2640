"""The sections of a search spec (model, task, space, recovery, objectives, search, cluster,
prediction) and the rules that need no other section. :class:`~paretoforge.spec.Spec` puts
them together and checks them against each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from paretoforge.exceptions import SpecError
from paretoforge.samplers import SAMPLERS

# Metric names a candidate reports besides its tasks' own (from the Task contract); latency
# metrics carry the profile: ``latency_p50_ms@cpu-1t``.
SIZE_METRICS = ("onnx_bytes", "params")
LATENCY_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_mean_ms")
# A decoder's per-token generation latency: one decode step after a past of the task's
# context, and the peak memory of its session (tasks whose Task.decoder is True; onnxruntime
# profiles; peak memory on CPU profiles).
DECODE_METRICS = ("decode_ms_per_token", "peak_memory_mb")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """Which base model to compress: a built-in recipe, or a local checkpoint (``path``)."""

    recipe: str | None = Field(
        "vit-digits",
        description="Built-in recipe that trains the base model from bundled data "
        "(vit-digits); left unset when `path` is given.",
    )
    path: str | None = Field(
        None,
        description="Local Hugging Face checkpoint directory (config.json + *.safetensors) of a "
        "family a task accepts (e.g. bert, distilbert, roberta, vit, deit); 'pkg:MODULE/SUBDIR' "
        "names a directory "
        "inside an installed Python package. Mutually exclusive with `recipe`.",
    )
    architecture: str | None = Field(
        None,
        description="Model class to load `path` as (e.g. BertForSequenceClassification); "
        "default: the one its config.json lists.",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Recipe fields to change, e.g. {hidden_size: 96, epochs: 40}; with `path`, "
        "config fields to change when loading (e.g. {num_labels: 3}).",
    )

    @model_validator(mode="before")
    @classmethod
    def _path_replaces_recipe(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") is not None and "recipe" not in data:
            data = {**data, "recipe": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.path is None:
            if self.recipe is None:
                raise ValueError("model: set `recipe` (a built-in base model) or `path` "
                                 "(a local checkpoint directory)")
            if self.architecture is not None:
                raise ValueError("model.architecture applies to a checkpoint `path` only")
            return self
        if self.recipe is not None:
            raise ValueError(
                f"model: `recipe` ({self.recipe!r}) and `path` ({self.path!r}) are mutually "
                "exclusive; keep one"
            )
        check_checkpoint(self.path)
        return self


class SplitSpec(_Strict):
    """How the task data is split; the held-out part (validation + test) is never trained on."""

    heldout_fraction: float = Field(
        0.25, gt=0.0, lt=1.0,
        description="Fraction of the data held out from training (validation + test)."
    )
    test_fraction: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="Fraction of the held-out part that is the test split, scored once per "
        "front member after the search and never fed back; the rest is validation, which "
        "every search decision uses."
    )
    seed: int = Field(0, description="Seed of the stratified split.")


class TaskSpec(_Strict):
    """The task: data, split and metric."""

    name: str = Field(
        "digits",
        description="Task name: `digits` (scikit-learn's bundled 8x8 digits), "
        "`text-classification` (your CSV / JSONL in `data`, tokenized with the checkpoint's "
        "tokenizer), `embedding-fidelity` (sentence embeddings of the checkpoint on "
        "pydoc_data.topics sentences, scored by cosine to the unpruned model's) or "
        "`image-classification` (your .npz or image folder in `data`, preprocessed as the "
        "checkpoint's preprocessor_config.json).",
    )
    data: str | None = Field(
        None,
        description="Path to the task data: text-classification, a .csv/.tsv/.jsonl with text "
        "and label; embedding-fidelity, your texts (.txt one per line, or a .csv/.tsv/.jsonl "
        "text column; default: pydoc_data.topics sentences); image-classification, a .npz "
        "(x images, y labels) or a folder with one subfolder of images per class; digits "
        "brings its own.",
    )
    split: SplitSpec = Field(default_factory=SplitSpec,
                             description="Train / validation / test split.")
    metric: str | None = Field(
        None,
        description="Quality metric on held-out data: one of the task's metrics (accuracy for "
        "the classification tasks, embedding_cosine for embedding-fidelity); default: the "
        "task's own.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the task loader, e.g. {max_length: 128, n_heldout: 300, "
        "n_train: 1500} for embedding-fidelity.",
    )

    @model_validator(mode="after")
    def _task_rules(self) -> TaskSpec:
        """The rules the task itself states (Task contract); an unknown name is left to Spec."""
        from paretoforge.tasks import TASKS

        if self.name not in TASKS:
            return self
        task = TASKS.get(self.name)
        if self.metric is None:
            object.__setattr__(self, "metric", task.quality_metric)
        elif self.metric not in task.metrics:
            raise ValueError(f"task.metric: task {self.name!r} is scored by "
                             f"{' or '.join(map(repr, task.metrics))}, not {self.metric!r}")
        if task.data is None and self.data:
            raise ValueError(f"task.data: the {self.name} task brings its own data; remove "
                             "task.data")
        if task.data_required and not self.data:
            raise ValueError(f"task.data: {self.name} needs the path of {task.data}")
        if self.data and task.data_may_be_dir:
            if not (Path(self.data).is_file() or Path(self.data).is_dir()):
                raise ValueError(f"task.data: {self.data!r} is neither a file nor a folder")
        elif self.data and not Path(self.data).is_file():
            raise ValueError(f"task.data: {self.data!r} is not a file")
        return self

    @property
    def quality_metric(self) -> str:
        """The metric candidates are scored by."""
        return str(self.metric)


class SpaceSpec(_Strict):
    """The search space: a preset with optional changes, or every dimension declared here;
    per-layer dimensions; and the modules that register custom dimensions."""

    preset: str | None = Field(
        "vit-prune",
        description="Search-space preset (`paretoforge spaces`); null: `dimensions` declares "
        "the whole space.",
    )
    modules: list[str] = Field(
        default_factory=list,
        description="Python modules that register custom dimensions "
        "(paretoforge.search_spaces.register_dimension): paths of .py files (relative to the "
        "spec file) or importable module names. Each is imported once before the space is "
        "checked; its dimensions are searched with their own choices unless `dimensions` "
        "names them with others.",
    )
    dimensions: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Replace a dimension's choices, e.g. {layers_kept: [2, 3, 4]}; with "
        "preset null, every dimension (layers_kept, heads_kept, ffn_kept, precision).",
    )
    per_layer: list[str] | None = Field(
        None,
        description="Dimensions chosen for each kept layer on its own (heads_kept, ffn_kept): "
        "one Optuna parameter per layer position; unset: the preset's (e.g. "
        "encoder-per-layer), [] for none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _load_modules(cls, data: Any) -> Any:
        # Before the fields: the modules' dimensions join `dimensions`, so every reader of
        # the spec (and the run's spec.yaml) sees the whole space.
        if not isinstance(data, dict) or not data.get("modules"):
            return data
        from paretoforge.search_spaces import load_dimension_modules

        modules = data["modules"]
        if not isinstance(modules, list):
            raise ValueError(f"space.modules: {modules!r} must be a list of module files or "
                             "names")
        try:
            dims = load_dimension_modules(modules)
        except SpecError as e:
            raise ValueError(str(e)) from None
        dimensions = dict(data.get("dimensions") or {})
        for d in dims:
            dimensions.setdefault(d.name, list(d.choices))
        return {**data, "dimensions": dimensions}

    @model_validator(mode="after")
    def _valid_space(self) -> SpaceSpec:
        from paretoforge.search_spaces import SPACES

        if self.preset is not None and self.preset not in SPACES:
            raise ValueError(f"space.preset: {SPACES.unknown_message(self.preset)}")
        try:
            self.search_space()
        except SpecError as e:
            raise ValueError(str(e)) from None
        return self

    def search_space(self) -> Any:
        """The :class:`~paretoforge.search_spaces.SearchSpace` this section describes."""
        from paretoforge.search_spaces import SearchSpace

        return SearchSpace.from_preset(self.preset, self.dimensions, per_layer=self.per_layer)


class RecoverySpec(_Strict):
    """Knowledge-distillation recovery applied to every pruned candidate."""

    epochs: int = Field(
        8, ge=0, le=1000, description="Distillation epochs over the training split."
    )
    lr: float = Field(1e-3, gt=0.0, lt=1.0, description="AdamW learning rate.")
    temperature: float = Field(
        2.0, gt=0.0, description="Softmax temperature of the logit KD loss."
    )
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="Weight of the KD loss; 1 - alpha goes to the label loss."
    )
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    hidden_weight: float = Field(
        0.0, ge=0.0, description="Weight of the per-layer hidden-state MSE term (0: off)."
    )
    pooled_weight: float | None = Field(
        None,
        ge=0.0,
        description="Weight of the pooled sentence-embedding cosine term; default 1.0 for "
        "embedding-fidelity, 0 otherwise.",
    )


class ObjectiveSpec(_Strict):
    """One objective of the multi-objective search."""

    metric: str = Field(
        description="Metric name: accuracy, embedding_cosine, onnx_bytes, params, or a latency "
        "with its profile, "
        "e.g. latency_p50_ms@cpu-1t (for a decoder: a prefill of one block), or a decoder's "
        "per-token decode latency, e.g. decode_ms_per_token@cpu-1t."
    )
    direction: Literal["minimize", "maximize"] = Field(description="minimize or maximize.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        parse_metric(v)
        return v


class ConstraintSpec(_Strict):
    """A feasibility bound on a metric; infeasible candidates never enter the front."""

    metric: str = Field(description="Metric name, as in objectives.")
    min: float | None = Field(None, description="Lower bound (inclusive).")
    max: float | None = Field(None, description="Upper bound (inclusive).")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        parse_metric(v)
        return v

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintSpec:
        if self.min is None and self.max is None:
            raise ValueError(f"constraint on {self.metric!r} needs `min` or `max`")
        return self


class SearchConfig(_Strict):
    """How the search runs: sampler, budget, seed, retries and timeouts."""

    strategy: Literal["one-shot", "per-candidate"] = Field(
        "one-shot",
        description="one-shot (the default): train one weight-sharing supernet of the base "
        "(see `one_shot`), evaluate each trial's sub-network cut from it without recovery "
        "(seconds per trial), then recover the candidates on and near the front by "
        "successive halving over distillation epochs (`one_shot.finish_epochs`). "
        "per-candidate: every pruned candidate is distilled from the base (`recovery`) "
        "before it is scored.",
    )

    sampler: str | None = Field(
        None,
        description="Optuna sampler, one of " + ", ".join(SAMPLERS.names()) + " (registered in "
        "paretoforge.samplers): gp (Gaussian process; best hypervolume per evaluation in "
        "benchmarks/search_efficiency.py, and the default of a per-candidate search, whose "
        "trials take a training each), tpe (the default of a one-shot search: its ask stays "
        "in milliseconds over thousands of seconds-long trials, where gp's takes a second at "
        "200), nsga2 (NSGA-II), nsga3 (NSGA-III, for three or more objectives) or random.",
    )
    trials: int = Field(
        24, ge=1, le=100_000,
        description="Number of COMPLETED trials to reach; in a one-shot search, of distinct "
        "sub-networks evaluated (a repeated proposal is answered from the first, free, and "
        "not counted), before the finishing rungs.",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="Wall-time budget in seconds: no trial starts after it (running ones "
        "finish); the search stops at whichever of trials and time comes first.",
    )
    seed: int = Field(0, description="Seed of the sampler, the split and the recovery.")
    population_size: int = Field(
        8, ge=2, le=1000, description="NSGA-II / NSGA-III population size (ignored by the others)."
    )
    max_failures: int = Field(
        20,
        ge=0,
        description="Stop when this many trials have failed in one session (a broken setup, not "
        "bad luck).",
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=100,
        description="Re-runs, on another worker, of a trial whose worker died (killed, out of "
        "memory, node lost); then the trial fails with the reasons. Build errors never retry.",
    )
    trial_timeout_s: float | None = Field(
        None,
        gt=0,
        description="A trial running longer than this is cancelled (its worker is replaced) and "
        "fails with reason 'timeout'; unset: no limit.",
    )
    seed_configs: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Configs to evaluate first, after the base model, e.g. [{layers_kept: 2, "
        "heads_kept: 2, ffn_kept: 0.5, precision: int8}]; a dimension left out is sampled.",
    )
    prescreen: bool = Field(
        False,
        description="Skip, before building, a sampled candidate whose median latency predicted "
        "from its config (by the profile's predictor, fitted on this search's measurements) "
        "violates a latency_p50_ms constraint, or is slower than a measured feasible trial of "
        "the same precision that keeps at least as much in every dimension -- each by more "
        "than a margin of max(10%, 2 x the predictor's held-out MAPE). Skipped trials are "
        "PRUNED in the study and do not count towards `trials`; the base model and "
        "seed_configs are always built.",
    )
    retime_rounds: int = Field(
        7, ge=0, le=50,
        description="After the search, the front's members and the base are timed again "
        "together on one worker: this many rounds, each visiting every member in a new "
        "shuffled order (one round of the profile's protocol against the base each), so a "
        "member's rounds are spread over the whole stage. The front quotes these latencies "
        "and their range; the search's own stay in the study. 0: keep the search's.",
    )
    prescreen_max_consecutive: int = Field(
        20,
        ge=1,
        le=10_000,
        description="After this many candidates skipped in a row, the next one is built anyway "
        "(samplers learn nothing from skipped trials and may keep proposing them).",
    )


    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, v: str | None) -> str | None:
        if v is not None and v not in SAMPLERS:
            raise ValueError(SAMPLERS.unknown_message(v))
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_sampler(cls, data: Any) -> Any:
        # Resolved here, so the run's spec.yaml names it and a resumed run keeps it.
        if isinstance(data, dict) and data.get("sampler") is None:
            strategy = data.get("strategy", "one-shot")
            data = {**data, "sampler": "tpe" if strategy == "one-shot" else "gp"}
        return data


class OneShotSpec(_Strict):
    """The weight-sharing supernet and the finishing of its front (search.strategy one-shot)."""

    supernet_epochs: int = Field(
        3, ge=1, le=1000,
        description="Epochs of supernet training on the training split (sandwich rule: "
        "the largest, the smallest and `random_subnets` random sub-networks each step, each "
        "distilled in place from the unpruned base).",
    )
    lr: float = Field(1e-3, gt=0.0, lt=1.0, description="Supernet AdamW learning rate.")
    batch_size: int = Field(64, ge=1, description="Supernet training batch size per worker.")
    random_subnets: int = Field(
        2, ge=0, le=16, description="Random sub-networks per step, besides largest and smallest."
    )
    train_workers: int | None = Field(
        None, ge=0, le=4096,
        description="Ray Train workers of the data-parallel supernet training (gloo on CPU, "
        "NCCL on GPU); unset: cluster.workers. 0: the supernet trains in the driver's own "
        "process, through Ray Train's local mode (one thread per cluster.cpus_per_worker): "
        "no controller, training processes or process group to start, which for a supernet "
        "that trains in seconds cost more than its training; not data-parallel, and a "
        "killed driver resumes it from its last epoch.",
    )
    finish_candidates: int = Field(
        9, ge=0, le=10_000,
        description="One-shot candidates that get a recovery: the best by non-dominated "
        "sorting of their one-shot values (the front first, then the next fronts); 0 skips "
        "finishing and the front is the one-shot one.",
    )
    finish_epochs: list[int] = Field(
        default_factory=lambda: [2, 6],
        min_length=1,
        description="Distillation epochs of each successive-halving rung, increasing: every "
        "candidate gets the first; the best 1/eta (non-dominated sorting, then crowding "
        "distance) of each rung go on to the next (see finish_resume).",
    )
    finish_resume: bool = Field(
        True,
        description="A promoted candidate continues from its weights of the rung before "
        "(ASHA's resume: a rung of E epochs after one of E' trains E - E' more, on a fresh "
        "warm-up and cosine schedule); false: every rung recovers it again from its supernet "
        "weights for the rung's whole budget.",
    )
    eta: int = Field(3, ge=2, le=100, description="Successive halving's reduction factor.")
    finish_compute_scale: float = Field(
        1.0, ge=1.0, le=100.0,
        description="Up to this many times a rung's epochs for a candidate that is cheaper to "
        "train than the base: one that keeps a fraction c of the base encoder's compute gets "
        "the rung's epochs times min(finish_compute_scale, 1/c), rounded, so the rung's "
        "candidates get about the same training compute (a 1-layer network of a 4-layer base "
        "then trains about as long as the per-candidate search would train it); 1: every "
        "candidate gets the rung's epochs.",
    )
    screen_rounds: int = Field(
        1, ge=1, le=50,
        description="Latency rounds of a one-shot trial's screening measurement (each against "
        "the base, fresh sessions). Finishing trials (the same graphs, other weights) are "
        "screened too when the front is re-timed (search.retime_rounds > 0: the figures the "
        "front quotes), in full otherwise; unpruned candidates always get the profile's full "
        "protocol (latency_rounds / latency_max_rounds / latency_target_spread).",
    )
    screen_seconds: float = Field(
        0.1, gt=0.0, le=60.0,
        description="Timed-call budget, in seconds, of a one-shot trial's screening "
        "measurement per profile (all its rounds together; at least screen_calls calls a "
        "round).",
    )
    screen_calls: int = Field(
        8, ge=3, le=2000,
        description="Timed calls a screening round makes at least, of the candidate and of the "
        "base beside it (the full protocol's 20). On a model whose call takes tens of "
        "milliseconds these calls are most of a one-shot trial; their median only ranks the "
        "one-shot search.",
    )

    def trainers(self, cluster_workers: int) -> int:
        """The supernet's Ray Train workers: ``train_workers``, unset meaning
        ``cluster_workers``; 0 means in the driver's process (Ray Train's local mode)."""
        return cluster_workers if self.train_workers is None else self.train_workers

    @field_validator("finish_epochs")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(e < 1 for e in v) or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"finish_epochs {v} must be positive and increasing, e.g. [2, 6]")
        return v


class ClusterSpec(_Strict):
    """Where candidates are built and measured."""

    address: str | None = Field(
        None,
        description="Ray address of an existing cluster; unset starts a local one "
        "(RAY_ADDRESS is honoured too).",
    )
    workers: int = Field(2, ge=1, le=4096, description="Worker actors: trials in flight at once.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved by each worker actor.")
    dashboard: bool = Field(
        False, description="Start the Ray dashboard (bound to 127.0.0.1) for a local cluster."
    )


class PredictedProfileSpec(_Strict):
    """A profile served by a latency predictor instead of a measurement."""

    source: str = Field(
        min_length=1,
        description="Where its measurements are: the run directory of a search that measured "
        "the profile (on its hardware), that run's predictors.json, or one latency predictor "
        "JSON file; resolved to an absolute path.",
    )
    source_profile: str | None = Field(
        None,
        min_length=1,
        description="The profile the measurements are stored under in `source`, when it is "
        "not this profile's name.",
    )
    allow_transfer: bool = Field(
        False,
        description="Use the source's predictor even where the machine its measurements came "
        "from differs from the nodes that are this profile's hardware (other instruction-set "
        "features, or a calibration beyond transfer_tolerance). Off: such a search is refused "
        "at start, because latencies do not carry over between such machines.",
    )
    transfer_tolerance: float = Field(
        0.5,
        gt=0,
        le=10,
        description="How far the calibrations of the source's machine and of a node may differ "
        "and still count as the same machine: each of fp32 GEMM throughput, int8 GEMM "
        "throughput and the int8 speed-up within a factor 1 + transfer_tolerance (0.5: 1.5x; "
        "one machine's own calibration drifts by up to about 1.2x when it is busy).",
    )

    @field_validator("source")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return str(Path(v).expanduser().resolve())


class PredictionSpec(_Strict):
    """Latency predictors: how many measurements they need, and profiles served by them."""

    min_samples: int = Field(
        8,
        ge=2,
        le=100_000,
        description="Measurements a profile's latency predictor needs before it predicts "
        "(pre-screening, predicted profiles).",
    )
    profiles: dict[str, PredictedProfileSpec] = Field(
        default_factory=dict,
        description="Profiles no node of the cluster serves, predicted instead of measured, "
        "e.g. {edge-arm: {source: runs/arm-board}}: each built candidate gets "
        "latency_p50_ms@<profile> from a predictor fitted on the source's measurements, "
        "labelled predicted everywhere. Listed in `profiles` or not, such a profile is never "
        "measured.",
    )


def resolve_model_path(path: str) -> Path:
    """A checkpoint path as a directory: ``pkg:MODULE/SUBDIR`` is looked up in the installed
    package MODULE (importlib.resources); ``recipe:NAME`` is a built-in checkpoint recipe
    (e.g. ``recipe:tiny-llama``), trained on first use and cached; anything else is a
    filesystem path (``~`` expanded).

    Example:
        >>> resolve_model_path("pkg:paretoforge/search_spaces").name
        'search_spaces'
    """
    if path.startswith("recipe:"):  # a built-in checkpoint recipe, trained once and cached
        from paretoforge.models.recipes import recipe_checkpoint

        return recipe_checkpoint(path[len("recipe:"):])
    if path.startswith("pkg:"):
        import importlib.resources

        module, _, sub = path[4:].strip("/").partition("/")
        try:
            root = importlib.resources.files(module)
        except (ModuleNotFoundError, TypeError, ValueError):
            raise ValueError(f"model.path {path!r}: no installed package {module!r}") from None
        return Path(str(root.joinpath(sub) if sub else root))
    return Path(path).expanduser()


def check_checkpoint(path: str) -> Path:
    """Check ``path`` is a checkpoint of a supported family; return its directory.

    Raises:
        ValueError: one line naming the path and what is missing (turned into a SpecError).
    """
    d = resolve_model_path(path)
    shown = repr(path) if str(d) == path else f"{path!r} ({str(d)!r})"
    if not d.is_dir():
        raise ValueError(f"model.path: checkpoint directory {shown} does not exist")
    if not (d / "config.json").is_file():
        raise ValueError(f"model.path: {shown} has no config.json; a Hugging Face checkpoint "
                         "directory holds config.json and *.safetensors weights")
    if not list(d.glob("*.safetensors")):
        raise ValueError(f"model.path: {shown} has no *.safetensors weights (only safetensors "
                         "checkpoints load; nothing is unpickled)")
    try:
        config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        where = str(d / "config.json")
        raise ValueError(f"model.path: {where!r} is not valid JSON: {e}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    families = checkpoint_families()
    if model_type not in families:
        raise ValueError(f"model.path: {shown} has model_type {model_type!r}, which is not "
                         f"supported; supported: {', '.join(families)}")
    return d


def checkpoint_families() -> list[str]:
    """The ``model_type`` of every checkpoint some registered task accepts."""
    from paretoforge.tasks import TASKS

    return list(dict.fromkeys(f for name in TASKS for f in TASKS.get(name).families))


def plain_metrics() -> tuple[str, ...]:
    """Metric names without a profile: every registered task's metrics, then the sizes."""
    from paretoforge.tasks import task_metrics

    return tuple(task_metrics()) + SIZE_METRICS


def parse_metric(name: str) -> tuple[str, str | None]:
    """Split ``latency_p50_ms@cpu-1t`` into ``("latency_p50_ms", "cpu-1t")``; validate the base.

    Example:
        >>> parse_metric("latency_p50_ms@cpu-1t")
        ('latency_p50_ms', 'cpu-1t')
    """
    base, sep, profile = name.partition("@")
    if base in LATENCY_METRICS + DECODE_METRICS:
        if not sep or not profile:
            raise ValueError(
                f"metric {name!r} needs the profile it is measured on, e.g. '{base}@cpu-1t'"
            )
        return base, profile
    plain = plain_metrics()
    if base in plain and not sep:
        return base, None
    known = ", ".join(plain + tuple(f"{m}@PROFILE" for m in LATENCY_METRICS + DECODE_METRICS))
    raise ValueError(f"unknown metric {name!r}; known: {known}")
