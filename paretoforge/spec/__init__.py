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
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from paretoforge.exceptions import SpecError, UnknownComponentError
from paretoforge.hw_profiles._profile import HardwareProfile
from paretoforge.spec._sections import (
    _NAME_RE,
    DECODE_METRICS,
    LATENCY_METRICS,
    SIZE_METRICS,
    ClusterSpec,
    ConstraintSpec,
    ModelSpec,
    ObjectiveSpec,
    OneShotSpec,
    PredictedProfileSpec,
    PredictionSpec,
    RecoverySpec,
    SearchConfig,
    SpaceSpec,
    SplitSpec,
    TaskSpec,
    _Strict,
    checkpoint_families,
    parse_metric,
    plain_metrics,
    resolve_model_path,
)

__all__ = [
    "DECODE_METRICS",
    "LATENCY_METRICS",
    "SIZE_METRICS",
    "checkpoint_families",
    "plain_metrics",
    "ClusterSpec",
    "ConstraintSpec",
    "ModelSpec",
    "ObjectiveSpec",
    "OneShotSpec",
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
    one_shot: OneShotSpec = Field(
        default_factory=OneShotSpec,
        description="Supernet training and the finishing of its front (search.strategy "
        "one-shot; ignored by per-candidate).",
    )
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="Ray cluster.")
    storage: str | None = Field(
        None,
        description="Optuna storage URL (e.g. sqlite:///runs/x/study.db, "
        "postgresql+psycopg2://user@host:5432/db with paretoforge[postgres]), shared by every "
        "driver of the run; the run records it without its password (a resuming driver gives "
        "it in PGPASSWORD or ~/.pgpass); unset keeps a journal file in the run directory.",
    )
    run_dir: str | None = Field(
        None, description="Run directory: a path, or a storage URI (s3://bucket/run, "
        "gs://..., file://...; the protocol's package as an extra, e.g. paretoforge[s3]); "
        "unset uses runs/<name> under the working directory."
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
        task = TASKS.get(self.task.name)
        if self.model.path is None and "recipe" not in task.sources:
            raise ValueError(f"task.name: {self.task.name!r} needs a checkpoint (model.path) "
                             "whose preprocessing and weights it uses")
        if self.model.path is not None and "checkpoint" not in task.sources:
            takes = [t for t in TASKS if "checkpoint" in TASKS.get(t).sources]
            raise ValueError(f"task.name: a model.path checkpoint runs the tasks "
                             f"{', '.join(takes)}, not {self.task.name!r}")
        if self.model.path is not None:
            kind = _checkpoint_model_type(self.model.path)
            if kind is not None and not task.accepts_family(kind):
                takes = [t for t in TASKS if TASKS.get(t).accepts_family(kind)]
                kinds = sorted({TASKS.get(t).modality for t in takes})
                runs = (takes[0] if len(takes) == 1 else
                        f"a {' or '.join(kinds)} task ({', '.join(takes)})" if takes else
                        "no registered task")
                raise ValueError(f"task.name: model.path is a {kind!r} checkpoint, which runs "
                                 f"{runs}, not {self.task.name!r} (which takes "
                                 f"{', '.join(task.families)})")
        if self.recovery.pooled_weight and "pooled" not in task.distill_losses:
            takes = [t for t in TASKS if "pooled" in TASKS.get(t).distill_losses]
            raise ValueError(f"recovery.pooled_weight: the pooled-embedding loss needs a task "
                             f"that exports a pooled embedding ({', '.join(takes)}), not "
                             f"{self.task.name!r}; remove it")
        if self.space.preset is not None and self.space.preset not in SPACES:
            raise ValueError(f"space.preset: {SPACES.unknown_message(self.space.preset)}")
        metrics = [o.metric for o in self.objectives]
        from paretoforge.tasks import task_metrics

        wrong = [m for m in metrics + [c.metric for c in self.constraints]
                 if m in task_metrics() and m not in task.metrics]
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
                base, profile = parse_metric(m)
                if (profile is not None and profile not in self.profiles
                        and profile not in self.prediction.profiles):
                    raise ValueError(
                        f"{where}: metric {m!r} needs profile {profile!r}, which is not in "
                        f"profiles {self.profiles}; add it to profiles (measured), or to "
                        f"prediction.profiles with the source of its measurements (predicted), "
                        f"or change the metric"
                    )
                if base in DECODE_METRICS:
                    self._check_decode_metric(where, m, task, profile)
        return self

    def _check_decode_metric(self, where: str, metric: str, task: Any,
                             profile: str | None) -> None:
        """A per-token decode latency needs a decoder task and an onnxruntime profile."""
        from paretoforge.hw_profiles import PROFILES
        from paretoforge.tasks import TASKS

        if not task.decoder:
            takes = [t for t in TASKS if TASKS.get(t).decoder]
            raise ValueError(
                f"{where}: metric {metric!r} is measured on a KV-cache decoder graph (per-token "
                f"decode latency, or its session's peak memory), and task "
                f"{self.task.name!r} exports no KV-cache decoder (tasks that do: "
                f"{', '.join(takes) or 'none'}); use latency_p50_ms@{profile} instead")
        if profile in PROFILES and PROFILES.get(profile).runtime != "onnxruntime":
            raise ValueError(
                f"{where}: metric {metric!r}: profile {profile!r} runs "
                f"{PROFILES.get(profile).runtime}, and a decode step is timed on the KV-cache "
                "ONNX graph; measure decode_ms_per_token on an onnxruntime profile")
        if (metric.startswith("peak_memory_mb@") and profile in PROFILES
                and PROFILES.get(profile).device != "cpu"):
            raise ValueError(
                f"{where}: metric {metric!r}: profile {profile!r} runs on "
                f"{PROFILES.get(profile).device}, and peak memory is the resident memory of a "
                "CPU session; use peak_memory_mb on a CPU profile (e.g. peak_memory_mb@cpu-1t)")

    @model_validator(mode="after")
    def _profiles_run_precisions(self) -> Spec:
        # A measured profile runs every candidate, so it must run every precision the space
        # can suggest; a predicted one is served from another profile's measurements.
        from paretoforge.hw_profiles import PROFILES

        space = self.space.search_space()  # valid by now
        choices = space.dimensions["precision"]
        for name in self.measured_profiles:
            profile = PROFILES.get(name)
            missing = [c for c in choices if not profile.supports(c)]
            if missing:
                raise ValueError(
                    f"profiles: profile {name!r} does not run precision {missing[0]!r} (it runs "
                    f"{', '.join(profile.precisions)}); drop {missing[0]!r} from "
                    f"space.dimensions.precision, or measure on a profile that lists it"
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
        _resolve_space_modules(data, path.parent)
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


def _resolve_space_modules(data: dict[str, Any], spec_dir: Path) -> None:
    """``space.modules`` files are relative to the spec file; made absolute here, so the
    validated spec (and the run's copy of it) names them wherever it is read."""
    space = data.get("space")
    if not isinstance(space, dict) or not isinstance(space.get("modules"), list):
        return
    space["modules"] = [
        str((spec_dir / Path(m).expanduser()).resolve())
        if isinstance(m, str) and m.endswith(".py") else m
        for m in space["modules"]
    ]


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


def _checkpoint_model_type(path: str) -> str | None:
    """The ``model_type`` in a checkpoint's config.json (already checked by ModelSpec)."""
    try:
        config = json.loads((resolve_model_path(path) / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None
