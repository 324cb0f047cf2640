"""The one schema: a search spec, written in YAML (or JSON) and validated before any work starts.

Example:
    >>> from paretoforge.spec import Spec
    >>> spec = Spec.from_file("examples/quickstart.yaml")  # doctest: +SKIP
    >>> spec.search.trials  # doctest: +SKIP
    24

Every model forbids unknown keys, every field carries a description (the JSON Schema from
``Spec.model_json_schema()`` documents the format), and cross-field rules run in
``model_validator(mode="after")``. Validation errors become one-line :class:`SpecError` messages
that name the field, the bad value and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from paretoforge.exceptions import SpecError, UnknownComponentError
from paretoforge.hw_profiles._profile import HardwareProfile

__all__ = [
    "PATH_FAMILIES",
    "ClusterSpec",
    "ConstraintSpec",
    "ModelSpec",
    "ObjectiveSpec",
    "PredictedProfileSpec",
    "PredictionSpec",
    "RecoverySpec",
    "SearchConfig",
    "SpaceSpec",
    "Spec",
    "SplitSpec",
    "TaskSpec",
    "parse_metric",
    "resolve_model_path",
]

SAMPLERS = ("nsga2", "nsga3", "tpe", "gp", "random")
# Metric names a candidate reports; latency metrics carry the profile: ``latency_p50_ms@cpu-1t``.
QUALITY_METRICS = ("accuracy", "embedding_cosine")
PLAIN_METRICS = ("accuracy", "embedding_cosine", "onnx_bytes", "params")
# model_type of the checkpoints `model.path` may name (encoders the text tasks can drive).
PATH_FAMILIES = ("bert", "distilbert", "roberta")
# Task -> its quality metric; tasks that need a checkpoint (their tokenizer) list it too.
TASK_METRICS = {"digits": "accuracy", "text-classification": "accuracy",
                "embedding-fidelity": "embedding_cosine"}
CHECKPOINT_TASKS = ("text-classification", "embedding-fidelity")
LATENCY_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_mean_ms")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """Which base model to compress: a built-in recipe, or a local checkpoint (``path``)."""

    recipe: str | None = Field(
        "vit-digits",
        description="Built-in recipe that trains the base model from bundled data "
        "(`paretoforge recipes` lists them); left unset when `path` is given.",
    )
    path: str | None = Field(
        None,
        description="Local Hugging Face checkpoint directory (config.json + *.safetensors) of a "
        f"supported family ({', '.join(PATH_FAMILIES)}); 'pkg:MODULE/SUBDIR' names a directory "
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
    """How the task data is split; the held-out part is never trained on."""

    heldout_fraction: float = Field(
        0.25, gt=0.0, lt=1.0, description="Fraction of the data held out for quality."
    )
    seed: int = Field(0, description="Seed of the stratified split.")


class TaskSpec(_Strict):
    """The task: data, split and metric."""

    name: str = Field(
        "digits",
        description="Task name: `digits` (scikit-learn's bundled 8x8 digits), "
        "`text-classification` (your CSV / JSONL in `data`, tokenized with the checkpoint's "
        "tokenizer) or `embedding-fidelity` (sentence embeddings of the checkpoint on "
        "pydoc_data.topics sentences, scored by cosine to the unpruned model's).",
    )
    data: str | None = Field(
        None,
        description="Path to the task data (text-classification: .csv/.tsv/.jsonl with text "
        "and label); built-in tasks bring their own (leave unset).",
    )
    split: SplitSpec = Field(default_factory=SplitSpec, description="Train / held-out split.")
    metric: Literal["accuracy", "embedding_cosine"] = Field(
        "accuracy",
        description="Quality metric on held-out data: accuracy (classification) or "
        "embedding_cosine (embedding-fidelity); default: the task's own.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the task loader, e.g. {max_length: 128, n_heldout: 300, "
        "n_train: 1500} for embedding-fidelity.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_metric(cls, data: Any) -> Any:
        if isinstance(data, dict) and "metric" not in data and data.get("name") in TASK_METRICS:
            data = {**data, "metric": TASK_METRICS[data["name"]]}
        return data

    @model_validator(mode="after")
    def _task_metric(self) -> TaskSpec:
        own = TASK_METRICS.get(self.name)
        if own is not None and self.metric != own:
            raise ValueError(f"task.metric: task {self.name!r} is scored by {own!r}, "
                             f"not {self.metric!r}")
        if self.name == "text-classification" and not self.data:
            raise ValueError("task.data: text-classification needs the path of a .csv, .tsv "
                             "or .jsonl file with text and label columns")
        if self.data and not Path(self.data).is_file():
            raise ValueError(f"task.data: {self.data!r} is not a file")
        return self

    @property
    def quality_metric(self) -> str:
        """The metric candidates are scored by."""
        return self.metric


class SpaceSpec(_Strict):
    """The search space: a preset with optional changes, or every dimension declared here."""

    preset: str | None = Field(
        "vit-prune",
        description="Search-space preset (`paretoforge spaces`); null: `dimensions` declares "
        "the whole space.",
    )
    dimensions: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Replace a dimension's choices, e.g. {layers_kept: [2, 3, 4]}; with "
        "preset null, every dimension (layers_kept, heads_kept, ffn_kept, precision).",
    )

    @model_validator(mode="after")
    def _valid_space(self) -> SpaceSpec:
        from paretoforge.search_spaces import SPACES, SearchSpace

        if self.preset is not None and self.preset not in SPACES:
            raise ValueError(f"space.preset: {SPACES.unknown_message(self.preset)}")
        try:
            SearchSpace.from_preset(self.preset, self.dimensions)
        except SpecError as e:
            raise ValueError(str(e)) from None
        return self


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
        "e.g. latency_p50_ms@cpu-1t."
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

    sampler: Literal["nsga2", "nsga3", "tpe", "gp", "random"] = Field(
        "gp",
        description="Optuna sampler: gp (Gaussian process; the default, best hypervolume per "
        "evaluation in benchmarks/search_efficiency.py), nsga2 (NSGA-II), nsga3 (NSGA-III, for "
        "three or more objectives), tpe or random.",
    )
    trials: int = Field(24, ge=1, le=100_000, description="Number of COMPLETED trials to reach.")
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
    prescreen_max_consecutive: int = Field(
        20,
        ge=1,
        le=10_000,
        description="After this many candidates skipped in a row, the next one is built anyway "
        "(samplers learn nothing from skipped trials and may keep proposing them).",
    )


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


class Spec(_Strict):
    """A whole search spec."""

    name: str = Field("search", description="Run name (letters, digits, '.', '_', '-').")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Base model.")
    task: TaskSpec = Field(default_factory=TaskSpec, description="Task data, split and metric.")
    space: SpaceSpec = Field(default_factory=SpaceSpec, description="Search space.")
    recovery: RecoverySpec = Field(
        default_factory=RecoverySpec, description="Distillation recovery after pruning."
    )
    objectives: list[ObjectiveSpec] = Field(
        default_factory=lambda: [
            ObjectiveSpec(metric="accuracy", direction="maximize"),
            ObjectiveSpec(metric="latency_p50_ms@cpu-1t", direction="minimize"),
        ],
        min_length=1,
        description="Objectives of the search (two or more make a Pareto front).",
    )
    constraints: list[ConstraintSpec] = Field(
        default_factory=list, description="Feasibility bounds; the front holds feasible trials."
    )
    profiles: list[str] = Field(
        default_factory=lambda: ["cpu-1t"],
        min_length=1,
        description="Hardware profiles every candidate is measured on (`paretoforge profiles`); "
        "one also under `prediction.profiles` is predicted instead of measured.",
    )
    hardware: list[HardwareProfile] = Field(
        default_factory=list,
        description="Your own hardware profiles, registered before `profiles` is checked: a "
        "list of profile definitions (the fields of `paretoforge profiles`: name, device, "
        "intra_op_threads, resource, ...), or the path of a profiles YAML file, read once here "
        "so the spec carries the definitions. A name already registered must have the same "
        "definition.",
    )
    search: SearchConfig = Field(default_factory=SearchConfig, description="Sampler and budget.")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="Ray cluster.")
    storage: str | None = Field(
        None,
        description="Optuna storage URL (e.g. sqlite:///runs/x/study.db, postgresql://...), "
        "shared by every driver of the run; unset keeps a journal file in the run directory.",
    )
    run_dir: str | None = Field(
        None, description="Run directory; unset uses runs/<name> under the working directory."
    )
    prediction: PredictionSpec = Field(
        default_factory=PredictionSpec,
        description="Latency predictors: profiles served by prediction, and their minimum data.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                f"name {v!r} must be 1-64 letters, digits, '.', '_' or '-' (it becomes a path)"
            )
        return v

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware_file(cls, v: Any) -> Any:
        if isinstance(v, str):  # a profiles YAML file: its definitions go into the spec
            from paretoforge.hw_profiles import load_profiles_yaml

            try:
                return [p.model_dump(mode="json") for p in load_profiles_yaml(v)]
            except SpecError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("hardware")
    @classmethod
    def _register_hardware(cls, v: list[HardwareProfile]) -> list[HardwareProfile]:
        from paretoforge.hw_profiles import register_profile

        names = [p.name for p in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"profiles {twice} are defined more than once; keep one each")
        for p in v:  # idempotent: workers re-validate this spec and register them again
            try:
                register_profile(p)
            except SpecError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", v):
            raise ValueError(
                f"storage {v!r} is not a storage URL; use e.g. 'sqlite:///study.db' or "
                "'postgresql://user@host/db', or leave it unset for a journal file in the run "
                "directory"
            )
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Spec:
        from paretoforge.hw_profiles import PROFILES
        from paretoforge.models.recipes import RECIPES
        from paretoforge.search_spaces import SPACES
        from paretoforge.tasks import TASKS

        for p in self.profiles:  # `hardware` profiles are registered by now (field validator)
            if p not in PROFILES:
                raise ValueError(f"profiles: {PROFILES.unknown_message(p)} Profiles of your "
                                 "own are declared under `hardware:`.")
        if len(set(self.profiles)) != len(self.profiles):
            raise ValueError(f"profiles: {self.profiles} lists a profile twice")
        if self.model.recipe is not None and self.model.recipe not in RECIPES:
            raise ValueError(f"model.recipe: {RECIPES.unknown_message(self.model.recipe)}")
        if self.task.name not in TASKS:
            raise ValueError(f"task.name: {TASKS.unknown_message(self.task.name)}")
        if self.task.name in CHECKPOINT_TASKS and self.model.path is None:
            raise ValueError(f"task.name: {self.task.name!r} needs a checkpoint (model.path) "
                             "whose tokenizer and encoder it uses")
        if self.model.path is not None and self.task.name not in CHECKPOINT_TASKS:
            raise ValueError(f"task.name: a model.path checkpoint runs the tasks "
                             f"{', '.join(CHECKPOINT_TASKS)}, not {self.task.name!r}")
        if self.space.preset is not None and self.space.preset not in SPACES:
            raise ValueError(f"space.preset: {SPACES.unknown_message(self.space.preset)}")
        metrics = [o.metric for o in self.objectives]
        wrong = [m for m in metrics + [c.metric for c in self.constraints]
                 if m in QUALITY_METRICS and m != self.task.quality_metric]
        if wrong:
            raise ValueError(f"objectives: task {self.task.name!r} is scored by "
                             f"{self.task.quality_metric!r}, not {wrong[0]!r}")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives: {metrics} names a metric twice")
        for where, names in (
            ("objectives", metrics),
            ("constraints", [c.metric for c in self.constraints]),
        ):
            for m in names:
                _, profile = parse_metric(m)
                if (profile is not None and profile not in self.profiles
                        and profile not in self.prediction.profiles):
                    raise ValueError(
                        f"{where}: metric {m!r} needs profile {profile!r}, which is not in "
                        f"profiles {self.profiles}; add it to profiles (measured), or to "
                        f"prediction.profiles with the source of its measurements (predicted), "
                        f"or change the metric"
                    )
        return self

    @model_validator(mode="after")
    def _prediction_checks(self) -> Spec:
        from paretoforge.hw_profiles import PROFILES

        for name in self.prediction.profiles:
            if name not in PROFILES:
                raise ValueError(f"prediction.profiles: {PROFILES.unknown_message(name)} "
                                 "Profiles of your own are declared under `hardware:`.")
        if self.prediction.profiles and not self.measured_profiles:
            raise ValueError(
                f"prediction.profiles: every profile is predicted "
                f"({sorted(self.prediction.profiles)}); measure at least one (e.g. cpu-1t): "
                "predictions are computed from the graph ONNX Runtime optimises for it"
            )
        latency = []
        for m in [o.metric for o in self.objectives] + [c.metric for c in self.constraints]:
            base, profile = parse_metric(m)
            if profile is None:
                continue
            if profile in self.prediction.profiles and base != "latency_p50_ms":
                raise ValueError(
                    f"metric {m!r}: profile {profile!r} is predicted, and its predictor serves "
                    f"the median only; use 'latency_p50_ms@{profile}'"
                )
            if base == "latency_p50_ms":
                latency.append(m)
        if self.search.prescreen and not latency:
            raise ValueError(
                "search.prescreen: nothing to pre-screen with; it needs an objective or "
                "constraint on a latency_p50_ms@PROFILE metric (or set prescreen: false)"
            )
        return self

    @property
    def measured_profiles(self) -> list[str]:
        """Profiles workers measure: ``profiles`` less those served by prediction."""
        return [p for p in self.profiles if p not in self.prediction.profiles]

    @property
    def predicted_profiles(self) -> list[str]:
        """Profiles served by a latency predictor (``prediction.profiles``)."""
        return list(self.prediction.profiles)

    def check_prediction_sources(self, *, where: str = "spec") -> None:
        """Load every ``prediction.profiles`` source once.

        Raises:
            SpecError: a source is missing or cannot serve its profile (one line, with the fix).
        """
        from paretoforge.evaluators.predictor import load_predictor
        from paretoforge.exceptions import ParetoforgeError

        for name, entry in self.prediction.profiles.items():
            try:
                load_predictor(entry.source, name, source_profile=entry.source_profile,
                               min_samples=self.prediction.min_samples)
            except ParetoforgeError as e:
                raise SpecError(f"{where}: prediction.profiles.{name}.source: {e}") from None

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, *, check_sources: bool = True) -> Spec:
        """Read and validate a YAML or JSON spec; raise :class:`SpecError` with one clear line.

        ``check_sources=False`` skips loading the ``prediction.profiles`` sources (reading a
        finished run needs only their recorded paths)."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(
                f"Spec file {str(path)!r} does not exist; pass the path of a YAML spec."
            )
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as e:  # yaml.YAMLError / json.JSONDecodeError
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SpecError(
                f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {first}"
            ) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SpecError(
                f"{path}: the spec must be a mapping of fields (name, model, task, ...), "
                f"got {type(data).__name__}"
            )
        return cls.from_dict(data, source=str(path), check_sources=check_sources)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "spec",
                  check_sources: bool = True) -> Spec:
        try:
            spec = cls.model_validate(data)
        except ValidationError as e:
            raise SpecError(f"{source}: {_one_line(e)}") from None
        except UnknownComponentError as e:
            raise SpecError(f"{source}: {e}") from None
        if check_sources:
            spec.check_prediction_sources(where=source)
        return spec

    def with_overrides(self, **changes: Any) -> Spec:
        """A copy with dotted-path overrides, e.g. ``{"search.trials": 8}``, re-validated."""
        data = self.model_dump(mode="json")
        for dotted, value in changes.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return Spec.from_dict(data, source="command-line options")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def resolve_model_path(path: str) -> Path:
    """A checkpoint path as a directory: ``pkg:MODULE/SUBDIR`` is looked up in the installed
    package MODULE (importlib.resources); anything else is a filesystem path (``~`` expanded).

    Example:
        >>> resolve_model_path("pkg:paretoforge/search_spaces").name
        'search_spaces'
    """
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
    if model_type not in PATH_FAMILIES:
        raise ValueError(f"model.path: {shown} has model_type {model_type!r}, which is not "
                         f"supported; supported: {', '.join(PATH_FAMILIES)}")
    return d


def parse_metric(name: str) -> tuple[str, str | None]:
    """Split ``latency_p50_ms@cpu-1t`` into ``("latency_p50_ms", "cpu-1t")``; validate the base.

    Example:
        >>> parse_metric("latency_p50_ms@cpu-1t")
        ('latency_p50_ms', 'cpu-1t')
    """
    base, sep, profile = name.partition("@")
    if base in LATENCY_METRICS:
        if not sep or not profile:
            raise ValueError(
                f"metric {name!r} needs the profile it is measured on, e.g. '{base}@cpu-1t'"
            )
        return base, profile
    if base in PLAIN_METRICS and not sep:
        return base, None
    known = ", ".join(PLAIN_METRICS + tuple(f"{m}@PROFILE" for m in LATENCY_METRICS))
    raise ValueError(f"unknown metric {name!r}; known: {known}")


def _one_line(e: ValidationError) -> str:
    """The first error of a pydantic ValidationError as ``field: problem (got value)``."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    kind = err["type"]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "extra_forbidden":
        parent = ".".join(str(x) for x in err["loc"][:-1])
        allowed = _allowed_keys(err["loc"][:-1])
        hint = (
            f"; allowed keys{' of ' + parent if parent else ''}: {', '.join(allowed)}"
            if allowed
            else ""
        )
        return f"unknown field {loc!r}{hint}"
    if kind == "missing":
        return f"field {loc!r} is required"
    value = err.get("input")
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if kind == "value_error":
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {shown})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        candidates = [ann] + list(args or [])
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            return []
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []
