"""The run directory and its results: the study, the trials, the Pareto front, exports.

Layout of a run directory::

    spec.yaml         the validated spec the run was started with
    run.json          study name, directions, base model info, versions
    study.journal     the Optuna study (journal storage), unless the spec names a storage URL
    artifacts/<key>/  model.onnx, model.safetensors, config.json, manifest.json per candidate
    front.json        the Pareto front, written when the search ends
    artifacts/<key>/manifest.json  also holds test_metrics once the search has ended (front
                      members and the base), as does the study's test_metrics user attribute
    predictors.json   per profile: the latency predictor, its data and held-out error

Quality has two numbers. ``metrics`` (and the study's values) are on the validation split,
which every search decision used, so a front member's validation quality is an optimistic
estimate; ``test_metrics`` are on the test split, which no decision saw, scored once per front
member after the search (:func:`score_test_split`). Quote the test number.

A metric a latency predictor gave (a profile under ``prediction.profiles``) is listed in the
trial's ``predicted_metrics`` user attr, a front member's ``predicted``, and an exported
manifest's ``predicted``.

Example:
    >>> run = load_run("runs/quickstart")  # doctest: +SKIP
    >>> [m.trial for m in run.front()]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paretoforge._io import sha256_file
from paretoforge.exceptions import ParetoforgeError, SpecError
from paretoforge.manifest import Manifest, load_manifest, read_manifest
from paretoforge.names import FailKind, Phase, StudyAttr, TrialAttr
from paretoforge.orchestrator.retime import retimed_metrics
from paretoforge.orchestrator.storage import open_study
from paretoforge.pipeline.artifacts import files_match
from paretoforge.spec import Spec

__all__ = ["Checkpoint", "FrontMember", "Run", "export_trial", "load_run", "non_dominated",
           "open_study", "score_test_split", "speedup_basis"]


def speedup_basis(objectives: list[str]) -> str:
    """The ``relative_to_base`` key a run's speed-up is quoted by: the first per-token decode
    objective's (``speedup_decode_ms_per_token@P``: a decoder's generation), else the first
    latency objective's, else ``cpu-1t``'s p50 (a prefill of one block, for a decoder).

    Example:
        >>> speedup_basis(["perplexity", "decode_ms_per_token@cpu-1t"])
        'speedup_decode_ms_per_token@cpu-1t'
        >>> speedup_basis(["accuracy", "latency_p50_ms@cpu"])
        'speedup_latency_p50_ms@cpu'
    """
    for prefix in ("decode_ms_per_token@", "latency_p50_ms@"):
        for o in objectives:
            if o.startswith(prefix):
                return f"speedup_{o}"
    return "speedup_latency_p50_ms@cpu-1t"

def non_dominated(points: list[tuple[float, ...]], directions: list[str]) -> list[int]:
    """Indices of the points no other point dominates (duplicates of a point all stay).

    Example:
        >>> non_dominated([(1, 5), (2, 6), (0, 6), (1, 6)], ["maximize", "minimize"])
        [0, 1]
    """
    sign = [-1.0 if d == "maximize" else 1.0 for d in directions]
    vals = [tuple(s * v for s, v in zip(sign, p, strict=True)) for p in points]  # all minimised
    keep = []
    for i, a in enumerate(vals):
        dominated = any(
            all(b_k <= a_k for a_k, b_k in zip(a, b, strict=True))
            and any(b_k < a_k for a_k, b_k in zip(a, b, strict=True))
            for j, b in enumerate(vals) if j != i
        )
        if not dominated:
            keep.append(i)
    return keep


@dataclass
class FrontMember:
    """One Pareto-optimal trial. ``metrics`` (and ``objectives``) hold validation quality,
    the search's; ``test_metrics`` the test split's, scored once after the search (empty
    until then, or for a run without real artifacts)."""

    trial: int
    config: dict[str, Any]
    objectives: dict[str, float]
    metrics: dict[str, float]
    artifacts: dict[str, str]
    relative: dict[str, float] = field(default_factory=dict)
    constraint_violation: float = 0.0
    misses: dict[str, float] = field(default_factory=dict)
    predicted: list[str] = field(default_factory=list)  # metric names a predictor gave
    prediction_error: dict[str, Any] = field(default_factory=dict)  # metric -> held-out error
    # One-shot search: "one-shot" (as cut from the supernet) or "finish" (recovered), the
    # finishing budget, and the member's one-shot trial with its values.
    phase: str | None = None
    recovery_epochs: int | None = None
    one_shot: dict[str, Any] | None = None
    # A finishing member that continued its previous rung's weights (one_shot.finish_resume):
    # that rung's trial, its artifact key and the epochs its weights had. None otherwise.
    resumed_from: dict[str, Any] | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)  # quality on the test split
    quality_metric: str = ""
    # Latency re-timed after the search (orchestrator/retime.py), per profile: the ratio to
    # the base (median and range over the interleaved rounds); ``metrics`` quote it, and
    # ``metrics_in_search`` keeps what the search measured. Empty: not re-timed.
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics_in_search: dict[str, float] = field(default_factory=dict)
    # The relative_to_base key the member's speed-up is quoted by (speedup_basis).
    speedup_metric: str = "speedup_latency_p50_ms@cpu-1t"

    @property
    def quality(self) -> dict[str, float | None]:
        """The quality metric on validation (the search's) and on test (the one to quote)."""
        q = self.quality_metric
        return {"validation": self.metrics.get(q), "test": self.test_metrics.get(q)}

    @property
    def feasible(self) -> bool:
        return self.constraint_violation <= 0

    def to_json(self) -> dict[str, Any]:
        return {"trial": self.trial, "config": self.config, "objectives": self.objectives,
                "metrics": self.metrics, "test_metrics": self.test_metrics,
                "quality": {"metric": self.quality_metric, **self.quality},
                "relative_to_base": self.relative,
                "feasible": self.feasible, "constraint_violation": self.constraint_violation,
                "misses": self.misses, "predicted": self.predicted,
                "prediction_error": self.prediction_error, "artifacts": self.artifacts,
                "phase": self.phase, "recovery_epochs": self.recovery_epochs,
                "one_shot": self.one_shot, "resumed_from": self.resumed_from,
                "latency": self.latency,
                "metrics_in_search": self.metrics_in_search,
                "speedup": {"metric": self.speedup_metric.removeprefix("speedup_"),
                            "value": self.relative.get(self.speedup_metric)}}


class Run:
    """A finished (or running) search, read back from its run directory.

    Example:
        >>> run = load_run("runs/quickstart")  # doctest: +SKIP
        >>> best = run.front()[-1]  # doctest: +SKIP
        >>> session = run.checkpoint(best).load_onnx()  # doctest: +SKIP
        >>> rows = run.trials_table()  # doctest: +SKIP
    """

    def __init__(self, run_dir: Path, *, store: Any = None) -> None:
        self.dir = Path(run_dir)
        self.store = store  # a RunStore whose working copy is run_dir, for a URI run
        spec_path = self.dir / "spec.yaml"
        if not spec_path.is_file():
            raise SpecError(
                f"{str(self.dir)!r} is not a paretoforge run directory (no spec.yaml); "
                "pass the --run-dir of a search"
            )
        self.spec = Spec.from_file(spec_path, check_sources=False)
        info = self.dir / "run.json"
        self.info: dict[str, Any] = json.loads(info.read_text()) if info.is_file() else {}
        self.study = open_study(self.dir, self.spec, create=False)

    @property
    def objective_names(self) -> list[str]:
        return [o.metric for o in self.spec.objectives]

    def predictors(self) -> dict[str, Any]:
        """Per profile, from ``predictors.json``: ``kind`` (measured / predicted),
        ``n_samples``, ``held_out`` (``method``, ``n``, ``mape``, ``within_10pct``,
        ``max_ape``: fractions, None without held-out data) and the fitted ``model``; ``{}``
        when the run has no predictor with data."""
        from paretoforge.orchestrator.prediction import read_predictors

        return dict(read_predictors(self.dir).get("profiles") or {})

    def predictor_errors(self) -> dict[str, dict[str, Any]]:
        """:meth:`predictors` without the models: what each predictor's error is, and on what.

        Example:
            >>> load_run("runs/x").predictor_errors()["cpu-1t"]["held_out"]["mape"]
            ... # doctest: +SKIP
            0.031
        """
        return {name: {k: v for k, v in entry.items() if k != "model"}
                for name, entry in self.predictors().items()}

    def retimed(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Trial (string) -> profile -> its record of the front's re-time (none: empty)."""
        return dict(self.study.user_attrs.get(StudyAttr.RETIMED) or {})

    def test_metrics(self) -> dict[int, dict[str, float]]:
        """Trial number -> its quality on the test split, for the trials scored on it after
        the search (front members and the base); ``{}`` before that."""
        raw = self.study.user_attrs.get(StudyAttr.TEST_METRICS) or {}
        return {int(k): dict(v) for k, v in raw.items()}

    def _test_metrics_of(self, t: Any, scored: dict[int, dict[str, float]]) -> dict[str, float]:
        if t.number in scored:
            return scored[t.number]
        rel = t.user_attrs.get(TrialAttr.ARTIFACT_DIR)
        manifest = read_manifest(self.dir / rel) if rel else None
        return dict(manifest.test_metrics) if manifest is not None else {}

    def trials(self, *, states: tuple[str, ...] | None = ("COMPLETE",)) -> list[Any]:
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if states is None or t.state.name in states:
                out.append(t)
        return out

    def trial(self, number: int) -> Any:
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return t
        raise ParetoforgeError(
            f"trial {number} is not in run {str(self.dir)!r} "
            f"(trials 0..{len(self.study.trials) - 1}); see `paretoforge front {self.dir}`"
        )

    def artifact_dir(self, trial: Any) -> Path:
        rel = trial.user_attrs.get(TrialAttr.ARTIFACT_DIR)
        if not rel:
            raise ParetoforgeError(f"trial {trial.number} has no artifacts (state "
                                   f"{trial.state.name}); export a completed trial")
        path = (self.dir / rel).resolve()
        if self.dir.resolve() not in path.parents:
            raise ParetoforgeError(f"trial {trial.number}: artifact path {rel!r} escapes the run")
        if self.store is not None and self.store.remote and not path.is_dir():
            self.store.fetch_artifact(path.name)  # from the run's storage URI, verified
        return path

    def base_trial(self) -> Any | None:
        for t in self.trials():
            if t.user_attrs.get(TrialAttr.IS_BASE):
                return t
        return None

    def front(self) -> list[FrontMember]:
        """The non-dominated feasible completed trials, one per distinct config (first wins).

        When no completed trial is feasible, the best-effort front of all completed trials is
        returned, each member with its ``constraint_violation`` (sum of positive violations)
        and ``misses`` (by how much it misses each bound, e.g. ``{"accuracy >= 0.99": 0.03}``).
        """
        seen: set[str] = set()
        unique = []
        for t in sorted(self.final_trials(), key=lambda t: t.number):
            key = t.user_attrs.get(TrialAttr.KEY)
            if key in seen:
                continue
            seen.add(key)
            unique.append(t)
        feasible = [t for t in unique if _violation(t) <= 0]
        pool = feasible or unique
        idx = non_dominated([tuple(t.values) for t in pool],
                            [o.direction for o in self.spec.objectives])
        base = self.base_trial()
        errors = self.predictor_errors()
        scored = self.test_metrics()
        retimed = self.retimed()
        members = [self._member(pool[i], base, errors, scored, retimed) for i in idx]
        first = self.objective_names[0]
        return sorted(members, key=lambda m: m.objectives[first])

    def final_trials(self) -> list[Any]:
        """The completed trials the front is taken from.

        A per-candidate search: all of them. A one-shot search whose front was finished: the
        recovered (finishing) trials, each config at the highest rung it reached, and the
        unpruned ones (the base, at each precision: nothing to recover); the one-shot values
        of the others stay in the study, for the record. A one-shot search without
        finishing: its one-shot trials.
        """
        trials = self.trials()
        finished = [t for t in trials if t.user_attrs.get(TrialAttr.PHASE) == Phase.FINISH]
        if not finished:
            return trials
        best: dict[str, Any] = {}
        for t in finished:
            cfg_key = str(t.user_attrs.get(TrialAttr.KEY, "")).rpartition("-r")[0]
            old = best.get(cfg_key)
            if old is None or t.user_attrs.get(TrialAttr.RUNG, 0) > old.user_attrs.get(
                    TrialAttr.RUNG, 0):
                best[cfg_key] = t
        base = self.base_trial()
        shape = _structure(base.user_attrs.get(TrialAttr.CONFIG, {})) if base else None
        unpruned = [t for t in trials if t.user_attrs.get(TrialAttr.PHASE) != Phase.FINISH
                    and shape is not None
                    and _structure(t.user_attrs.get(TrialAttr.CONFIG, {})) == shape]
        return sorted([*unpruned, *best.values()], key=lambda t: t.number)

    def _member(self, t: Any, base: Any | None,
                errors: dict[str, dict[str, Any]] | None = None,
                scored: dict[int, dict[str, float]] | None = None,
                retimed: dict[str, dict[str, Any]] | None = None) -> FrontMember:
        searched = dict(t.user_attrs.get(TrialAttr.METRICS, {}))
        retimed = self.retimed() if retimed is None else retimed
        metrics = retimed_metrics(searched, retimed.get(str(t.number)))
        scored = self.test_metrics() if scored is None else scored
        test_metrics = self._test_metrics_of(t, scored)
        predicted = list(t.user_attrs.get(TrialAttr.PREDICTED_METRICS) or [])
        prediction_error = {}
        for m in predicted:
            entry = (errors or {}).get(m.partition("@")[2]) or {}
            prediction_error[m] = {"source": entry.get("source"), **(entry.get("held_out") or {})}
        relative: dict[str, float] = {}
        if base is not None:
            bm = retimed_metrics(base.user_attrs.get(TrialAttr.METRICS, {}),
                                 retimed.get(str(base.number)))
            for k, v in metrics.items():
                if k.startswith(("latency_", "decode_")) and bm.get(k):
                    relative[f"speedup_{k}"] = bm[k] / v if v else float("inf")
            for k in ("onnx_bytes", "params"):
                if bm.get(k):
                    relative[f"{k}_ratio"] = metrics[k] / bm[k]
            quality = self.spec.task.quality_metric
            if quality in bm and quality in metrics:
                relative[f"{quality}_delta"] = metrics[quality] - bm[quality]
            base_test = self._test_metrics_of(base, scored)
            if quality in base_test and quality in test_metrics:
                relative[f"{quality}_test_delta"] = test_metrics[quality] - base_test[quality]
        art = self.artifact_dir(t)
        artifacts = {name: str(art / name) for name in
                     ("model.onnx", "model.safetensors", "config.json", "manifest.json")}
        return FrontMember(
            trial=t.number, config=dict(t.user_attrs.get(TrialAttr.CONFIG, t.params)),
            objectives=dict(zip(self.objective_names, t.values, strict=True)), metrics=metrics,
            artifacts=artifacts, relative=relative, constraint_violation=_violation(t),
            misses=self._misses(t), predicted=predicted, prediction_error=prediction_error,
            phase=t.user_attrs.get(TrialAttr.PHASE),
            recovery_epochs=t.user_attrs.get(TrialAttr.RECOVERY_EPOCHS),
            one_shot=self._one_shot_of(t), resumed_from=self._resumed_from(t),
            test_metrics=test_metrics, quality_metric=self.spec.task.quality_metric,
            speedup_metric=speedup_basis(self.objective_names),
            latency={p: {"rel_p50": r.get("rel_p50"), "rel_low": r.get("rel_low"),
                         "rel_high": r.get("rel_high"), "rounds": r.get("rounds"),
                         "source": "front re-time"}
                     for p, r in (retimed.get(str(t.number)) or {}).items()},
            metrics_in_search=searched if str(t.number) in retimed else {},
        )

    def _one_shot_of(self, t: Any) -> dict[str, Any] | None:
        """A finishing trial's one-shot trial: its number, objectives and metrics."""
        number = t.user_attrs.get(TrialAttr.ONE_SHOT_TRIAL)
        if number is None:
            return None
        src = self.trial(int(number))
        return {"trial": src.number,
                "objectives": dict(zip(self.objective_names, src.values or [], strict=False)),
                "metrics": dict(src.user_attrs.get(TrialAttr.METRICS, {}))}

    def _resumed_from(self, t: Any) -> dict[str, Any] | None:
        """A finishing trial's previous rung, when it continued those weights."""
        key = t.user_attrs.get(TrialAttr.RESUME_FROM)
        if not key:
            return None
        before = next((u.number for u in self.trials() if u.number < t.number
                       and u.user_attrs.get(TrialAttr.KEY) == key
                       and u.user_attrs.get(TrialAttr.PHASE) == Phase.FINISH
                       and TrialAttr.CACHED_FROM not in u.user_attrs), None)
        return {"trial": before, "artifact": key,
                "epochs": t.user_attrs.get(TrialAttr.RESUME_EPOCHS)}

    def _misses(self, t: Any) -> dict[str, float]:
        cons = list(t.user_attrs.get(TrialAttr.CONSTRAINTS) or [])
        names = []
        for c in self.spec.constraints:
            if c.min is not None:
                names.append(f"{c.metric} >= {c.min:g}")
            if c.max is not None:
                names.append(f"{c.metric} <= {c.max:g}")
        return {n: float(v) for n, v in zip(names, cons, strict=False) if v > 0}

    def checkpoint(self, trial: int | Any) -> Checkpoint:
        """The artifacts of a trial (its number, a FrozenTrial or a :class:`FrontMember`).

        Raises:
            ParetoforgeError: The trial's manifest is not a real build's (a stand-in
                worker's, :mod:`paretoforge.testing`).
        """
        number = trial if isinstance(trial, int) else getattr(trial, "trial", None)
        if not isinstance(number, int):
            number = trial.number
        directory = self.artifact_dir(self.trial(number))
        if (directory / "manifest.json").exists():  # a fake's is refused; none: loading says
            load_manifest(directory)
        return Checkpoint(directory)

    def trials_table(self) -> list[dict[str, Any]]:
        """Every trial as a flat row: state, objectives, config, retries, failure reason.

        Columns: ``trial``, ``state``, one per objective metric (None unless complete), one
        per config dimension, ``key``, ``feasible``, ``constraint_violation``, ``on_front``,
        ``cached_from``, ``reused_artifact``, ``attempts``, ``fail_kind``, ``fail_reason``
        (first line), ``duration_s``, ``worker``, ``node_id``, ``is_base``,
        ``predicted_metrics`` (metrics a predictor gave, comma-separated) and
        ``prescreen_reason`` (why a PRUNED trial was skipped before it was built).
        """
        front = {m.trial for m in self.front()} if self.trials() else set()
        rows = []
        for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number):
            ua = t.user_attrs
            complete = t.state.name == "COMPLETE"
            row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
            for i, name in enumerate(self.objective_names):
                row[name] = t.values[i] if complete and t.values else None
            row.update(ua.get(TrialAttr.CONFIG) or t.params)
            reason = str(ua.get(TrialAttr.FAIL_REASON) or "")
            row.update({
                "key": ua.get(TrialAttr.KEY),
                "feasible": (_violation(t) <= 0) if complete else None,
                "constraint_violation": _violation(t) if complete else None,
                "on_front": t.number in front,
                "cached_from": ua.get(TrialAttr.CACHED_FROM),
                "reused_artifact": bool(ua.get(TrialAttr.REUSED_ARTIFACT, False)),
                "attempts": ua.get(TrialAttr.ATTEMPTS,
                                   1 if complete and TrialAttr.CACHED_FROM not in ua else None),
                "fail_kind": ua.get(TrialAttr.FAIL_KIND),
                "fail_reason": reason.strip().splitlines()[0] if reason.strip() else None,
                "duration_s": (t.duration.total_seconds() if t.duration is not None else None),
                "worker": ua.get(TrialAttr.WORKER),
                "node_id": ua.get(TrialAttr.NODE_ID),
                "is_base": bool(ua.get(TrialAttr.IS_BASE, False)),
                "predicted_metrics": ", ".join(ua.get(TrialAttr.PREDICTED_METRICS) or []) or None,
                "prescreen_reason": ua.get(TrialAttr.PRESCREEN_REASON),
            })
            rows.append(row)
        return rows

    def hypervolume_history(self) -> tuple[list[tuple[int, float]], dict[str, float]]:
        """Hypervolume of the front after each completed trial, and the reference point.

        The reference point is the worst value observed on each objective over all completed
        trials of the run, so the curve never falls. The front is the feasible one (the
        best-effort one while no trial is feasible), as in :meth:`front`.
        """
        from paretoforge.orchestrator.hypervolume import hypervolume, worst_point

        done = sorted(self.trials(), key=lambda t: t.number)
        if not done:
            return [], {}
        dirs = [o.direction for o in self.spec.objectives]
        ref = worst_point([tuple(t.values) for t in done], dirs)
        history = []
        for i, t in enumerate(done):
            seen = done[: i + 1]
            pool = [x for x in seen if _violation(x) <= 0] or seen
            points = [tuple(x.values) for x in pool]
            front = [points[j] for j in non_dominated(points, dirs)]
            history.append((t.number, hypervolume(front, dirs, ref)))
        return history, dict(zip(self.objective_names, ref, strict=True))

    def prescreened(self) -> list[Any]:
        """Trials skipped before they were built (``search.prescreen``), PRUNED in the study."""
        return [t for t in self.trials(states=("PRUNED",))
                if t.user_attrs.get(TrialAttr.PRESCREENED)]

    def failures(self) -> dict[str, int]:
        """Failed trials counted by kind (build, measurement, timeout, worker_lost, ...)."""
        out: dict[str, int] = {}
        for t in self.trials(states=("FAIL",)):
            kind = str(t.user_attrs.get(TrialAttr.FAIL_KIND) or FailKind.ERROR.value)
            out[kind] = out.get(kind, 0) + 1
        return out


class Checkpoint:
    """A trial's artifacts: an ONNX Runtime session or the pruned PyTorch model."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def load_onnx(self, providers: list[str] | None = None) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(str(self.dir / "model.onnx"),
                                    providers=providers or ["CPUExecutionProvider"])

    def load_torch(self) -> Any:
        from paretoforge.models.io import load_pretrained

        return load_pretrained(self.dir)

    @property
    def manifest(self) -> Manifest:
        """The artifact's typed :class:`~paretoforge.manifest.Manifest`."""
        return load_manifest(self.dir)

    def verify(self) -> bool:
        """True when every file matches the sha256 in the manifest."""
        from paretoforge.pipeline.artifacts import verify_artifact

        return verify_artifact(self.dir) is not None


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Open a run written by ``paretoforge search``: a directory, or a storage URI
    (``s3://bucket/run``), whose study and small files are brought into its local working copy
    first and whose artifacts are fetched when they are asked for."""
    from paretoforge.orchestrator.runstore import RunStore, is_uri

    if is_uri(run_dir):
        store = RunStore.open(run_dir)
        store.pull()
        return Run(store.local, store=store)
    return Run(Path(run_dir))


def export_trial(run: Run, number: int, out: Path, *, force: bool = False) -> Path:
    """Copy a trial's checkpoint to ``out`` with a complete manifest; atomic (temp dir + rename).

    The export holds ``model.onnx``, ``model.safetensors`` + ``config.json`` and
    ``manifest.json`` (objectives, metrics with their profile, the split record, input spec,
    preprocessing, package versions, sha256 of every file), with ``quality`` giving the
    validation and the test quality side by side (``test_metrics``: the test split's).
    Metrics a latency predictor gave are in ``metrics`` too, named under ``predicted`` with
    their predictor's held-out error, and their ``measurements`` entry says
    ``"predicted": true``.
    """
    from paretoforge.orchestrator.runstore import check_out_dir

    out = check_out_dir(Path(out), force=force, ours=_export_files, what="export")
    t = run.trial(number)
    if t.state.name != "COMPLETE":
        raise ParetoforgeError(f"trial {number} is {t.state.name}; only completed trials export")
    src = run.artifact_dir(t)
    manifest = load_manifest(src)
    for name, digest in manifest.files.items():
        if not files_match(src, {name: digest}):
            raise ParetoforgeError(f"{src / name}: checksum differs from its manifest; the "
                                   "artifact was modified or is corrupt; re-run the trial")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in manifest.files:  # tokenizer side files may sit in subfolders
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, tmp / name)
        update: dict[str, Any] = {
            "trial": t.number,
            "run": {"dir": str(run.dir.resolve()), "study": run.spec.name},
            "objectives": {o.metric: {"value": v, "direction": o.direction}
                           for o, v in zip(run.spec.objectives, t.values, strict=True)},
        }
        predicted = list(t.user_attrs.get(TrialAttr.PREDICTED_METRICS) or [])
        if predicted:
            metrics = t.user_attrs.get(TrialAttr.METRICS) or {}
            errors = run.predictor_errors()
            update["metrics"] = {**manifest.metrics,
                                 **{m: metrics[m] for m in predicted if m in metrics}}
            update["predicted"] = {"metrics": predicted, "predictors": {}}
            measurements = dict(manifest.measurements)
            for m in predicted:
                profile = m.partition("@")[2]
                update["predicted"]["predictors"][profile] = errors.get(profile, {})
                measurements[profile] = {"profile": profile, "p50_ms": metrics.get(m),
                                         "predicted": True, "stop_reason": "predicted"}
            update["measurements"] = measurements
        base = run.base_trial()
        scored = run.test_metrics()
        if base is not None:
            update["base_trial_metrics"] = base.user_attrs.get(TrialAttr.METRICS, {})
            update["base_trial_test_metrics"] = run._test_metrics_of(base, scored)
        test = run._test_metrics_of(t, scored)
        quality = run.spec.task.quality_metric
        update["test_metrics"] = test
        update["quality"] = {
            "metric": quality, "validation": manifest.metrics.get(quality),
            "test": test.get(quality),
            "note": "validation: the split every search decision used (optimistic); test: "
                    "never seen by the search, scored once after it -- quote test"
                    + ("" if test else "; this trial was not scored on test (only front "
                       "members and the base are)"),
        }
        update["files"] = {name: sha256_file(tmp / name) for name in manifest.files}
        manifest.model_copy(update=update).write(tmp / "manifest.json")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _export_files(out: Path) -> set[str] | None:
    """The files an earlier export wrote into ``out`` (its manifest says it is one), or None."""
    manifest = read_manifest(out / "manifest.json")
    if manifest is None or manifest.trial is None or manifest.run is None:
        return None
    return {*manifest.files, "manifest.json"}


def _structure(config: dict[str, Any]) -> tuple[Any, ...]:
    """What a config keeps of the base (its weights), precision and graph passes aside."""
    return tuple(json.dumps(config.get(k), sort_keys=True)
                 for k in ("layers_kept", "heads_kept", "ffn_kept"))


def _violation(t: Any) -> float:
    return float(sum(max(0.0, c) for c in (t.user_attrs.get(TrialAttr.CONSTRAINTS) or [])))


def score_test_split(run: Run, prepared: Any, *, study: Any | None = None,
                     log: Any = print) -> dict[int, dict[str, float]]:
    """Score the test split once for each front member and the base trial, after the search.

    Each artifact's ``model.onnx`` is scored on the test split of ``prepared`` (the driver's
    bundle: the workers never had it); the result goes into the artifact's manifest
    (``test_metrics``) and, keyed by trial number, into the study's
    :attr:`~paretoforge.names.StudyAttr.TEST_METRICS` user attribute. A trial already scored
    is not scored again, and nothing here is told to the study as a value. Artifacts that are
    not a real build's (a stand-in worker's) are skipped.

    Args:
        run: The finished run.
        prepared: The full :class:`~paretoforge.pipeline.prepare.Prepared` bundle.
        study: Where to record it (the driver's study; default: the run's).
        log: Where the one summary line goes.

    Returns:
        Trial number -> ``{quality metric: test value}``, every trial scored so far.
    """
    from paretoforge.pipeline.final import describe_test_split, record_test_metrics, score_test

    study = study if study is not None else run.study
    done = run.test_metrics()
    wanted = [m.trial for m in run.front()] if run.trials() else []
    base = run.base_trial()
    if base is not None:
        wanted.append(base.number)
    record = describe_test_split(prepared)
    new = 0
    for number in dict.fromkeys(wanted):
        if number in done:
            continue
        directory = run.artifact_dir(run.trial(number))
        manifest = read_manifest(directory)
        if manifest is None:
            continue  # not a real build's artifact: nothing to score
        if manifest.test_metrics and manifest.test_split.get("indices_sha256") == \
                record["indices_sha256"]:
            done[number] = dict(manifest.test_metrics)  # a twin's artifact, scored already
            continue
        done[number] = score_test(prepared, directory, batch_size=record["batch_size"])
        record_test_metrics(directory, done[number], record)
        new += 1
    if new or done:
        study.set_user_attr(StudyAttr.TEST_METRICS, {str(k): v for k, v in done.items()})
    if new:
        log(f"test split ({record['n']} examples, never seen by the search): scored "
            f"{new} trial(s): the front's members and the base")
    return done
