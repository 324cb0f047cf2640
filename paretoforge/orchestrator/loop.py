"""The ask-and-tell loop: trials to workers, results to the study; the driver owns every write.

    trial = study.ask() -> cfg = space.suggest(trial) -> same config completed? tell its values
                                                      -> same config in flight? wait for it
                                                      -> else a free worker evaluates cfg
    ray.wait(results) -> study.tell(trial, objective values) + user attrs

Exactly ``search.trials`` trials end COMPLETE: never more in flight than are still needed.

Failures. A worker that dies mid-trial (killed, out of memory, node lost) is replaced and the
trial re-run on the next free worker, up to ``search.max_retries`` times, each attempt's reason
kept in the ``attempt_errors`` user attr; then the trial FAILs (``fail_kind`` "worker_lost"). A
build or measurement error FAILs the trial at once (kinds "build", "measurement", "error"). A
trial running past ``search.trial_timeout_s`` has its worker killed and replaced and FAILs with
reason "timeout". Every failure's reason is in the ``fail_reason`` user attr.

Resume. Trials a dead driver left RUNNING are taken up again under their own number: answered
from the cache when their config completed meanwhile, completed from their artifact when it is on
disk with valid checksums, else re-run. Trials beyond the budget FAIL with kind "interrupted"
(they are not failures of the search and do not count towards ``search.max_failures``).

Latency predictors (:mod:`paretoforge.orchestrator.prediction`). Every built candidate's
manifest feeds the predictor of each measured profile (after it has predicted the measurement
from the config alone: the prequential error in ``predictors.json``); profiles served by
prediction get their ``latency_p50_ms`` from their predictor, listed in the trial's
``predicted_metrics`` user attr. With ``search.prescreen``, a sampled candidate predicted to
violate a latency constraint or to be dominated is told PRUNED before it is built (user attrs
``prescreened``, ``prescreen_reason``, ``prescreen_predicted``); it does not count towards the
budget, and after ``search.prescreen_max_consecutive`` skips in a row the next candidate is
built anyway.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paretoforge.exceptions import BuildError, MeasurementError, ParetoforgeError
from paretoforge.manifest import read_manifest
from paretoforge.names import FailKind, Phase, StopReason, TrialAttr
from paretoforge.orchestrator.hypervolume import ParetoArchive, hypervolume
from paretoforge.orchestrator.pool import WorkerPool, is_worker_lost
from paretoforge.orchestrator.prediction import SearchPredictors
from paretoforge.orchestrator.progress import Progress
from paretoforge.pipeline.artifacts import (
    artifact_path,
    remove_partial,
    result_from_manifest,
    verify_artifact,
)
from paretoforge.search_spaces import CandidateConfig, SearchSpace
from paretoforge.spec import Spec

__all__ = ["LoopStats", "SearchLoop", "constraint_values", "resume_payload"]

# The worker's result keys that become the trial's user attrs of the same name.
_RESULT_ATTRS = (TrialAttr.METRICS, TrialAttr.ARTIFACT_DIR, TrialAttr.TIMINGS, TrialAttr.WORKER,
                 TrialAttr.NODE_ID)


def constraint_values(spec: Spec, metrics: dict[str, float]) -> list[float]:
    """One value per bound, Optuna's convention: <= 0 is satisfied."""
    out = []
    for c in spec.constraints:
        v = metrics[c.metric]
        if c.min is not None:
            out.append(c.min - v)
        if c.max is not None:
            out.append(v - c.max)
    return out


def job_key(cfg: CandidateConfig, recovery_epochs: int | None = None) -> str:
    """The content key of a trial's artifact: the config's key, and for a finishing trial
    (a one-shot candidate recovered for ``recovery_epochs``) that key with ``-r<epochs>``."""
    return cfg.key if recovery_epochs is None else f"{cfg.key}-r{int(recovery_epochs)}"


def resume_payload(run_dir: str | Path, resume: dict[str, Any], *, in_place: bool
                   ) -> dict[str, Any]:
    """What a finishing trial that continues its previous rung's weights sends its worker:
    ``resume`` (that artifact's ``key`` and ``epochs``), plus ``weights``, the bytes of its
    ``model.safetensors``, for a worker that does not see the run directory (``in_place``
    false)."""
    payload = dict(resume)
    if not in_place:
        from paretoforge.models.io import WEIGHTS_NAME

        payload["weights"] = (artifact_path(run_dir, payload["key"]) / WEIGHTS_NAME).read_bytes()
    return payload


@dataclass
class _Job:
    trial: Any  # optuna.trial.Trial
    cfg: CandidateConfig
    attempt: int = 1
    errors: list[str] = field(default_factory=list)
    slot: int = -1
    submitted: float = 0.0
    recovery_epochs: int | None = None  # a finishing trial's recovery budget
    resume: dict[str, Any] | None = None  # its previous rung's artifact: {"key", "epochs"}

    @property
    def key(self) -> str:
        return job_key(self.cfg, self.recovery_epochs)


@dataclass
class LoopStats:
    """What the loop did and where its own time went (seconds, this session)."""

    completed: int = 0
    cached: int = 0
    failed: int = 0
    retried: int = 0
    timed_out: int = 0
    recovered: int = 0
    prescreened: int = 0  # candidates skipped before building (PRUNED), see search.prescreen
    finished: int = 0  # one-shot search: finishing trials run (every rung)
    asked_ahead: int = 0  # trials started from an ask made while every worker was busy
    wall_s: float = 0.0
    ask_s: float = 0.0
    tell_s: float = 0.0
    submit_s: float = 0.0
    wait_s: float = 0.0
    first_ready_s: float | None = None  # from the loop's start to the first worker's ping
    stopped: str | None = None  # why the search stopped early, in words
    stop_reason: StopReason | None = None  # the same, to branch on

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


class SearchLoop:
    """Runs trials on a :class:`WorkerPool` until the budget is met; see the module docstring.

    Example:
        >>> loop = SearchLoop(spec, study, space, pool, progress, run_dir=run_dir,
        ...                   base_params=space.base_params(4, 4))  # doctest: +SKIP
        >>> loop.run().completed  # doctest: +SKIP
        24
    """

    def __init__(self, spec: Spec, study: Any, space: SearchSpace, pool: WorkerPool,
                 progress: Progress, *, run_dir: Path, base_params: dict[str, Any],
                 sync: Callable[..., None] | None = None,
                 verify: Callable[..., dict[str, Any] | None] | None = None,
                 accept: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.spec = spec
        self.study = study
        self.space = space
        self.pool = pool
        self.progress = progress
        self.run_dir = Path(run_dir)
        self.base_params = base_params
        self.sync = sync
        # how a RUNNING trial's finished artifact is checked before it is reused (see _recover)
        self.verify = verify or verify_artifact
        # what the driver does with a build's artifact before the trial is told COMPLETE
        # (commit an artifact sent back as bytes, upload it to the run's storage URI)
        self.accept = accept
        self.target = spec.search.trials
        self.directions = [o.direction for o in spec.objectives]
        self.in_flight: dict[Any, _Job] = {}
        self.retry: deque[_Job] = deque()
        self.revived: deque[Any] = deque()
        self.waiting: dict[str, list[Any]] = {}  # key -> trials waiting on an in-flight twin
        # jobs whose result is in and whose bookkeeping waits while their worker is handed
        # its next trial: still "in flight" to the dedupe and the trial count
        self.completing: dict[str, _Job] = {}
        self._predictors_saved = 0.0  # monotonic time of the last predictors.json write
        self._predictors_dirty = False
        self.cache: dict[str, Any] = {}  # key -> the FrozenTrial that completed it first
        self.build_failed: dict[str, tuple[int, str]] = {}  # key -> (trial, reason): no rebuild
        self.completed = self.cached = self.failed = 0
        self.session_failures = 0
        self.stats = LoopStats()
        self._t0 = time.monotonic()
        self._done_at_start = 0
        self._deadline = (self._t0 + spec.search.timeout_s) if spec.search.timeout_s else None
        self._front = ParetoArchive(self.directions)
        self._front_all = ParetoArchive(self.directions)
        self._worst: list[float] | None = None
        self.predictors = SearchPredictors(spec, self.run_dir)
        self._skips_in_a_row = 0
        self.phase: str | None = None  # set on each trial asked (one-shot / finish), if any
        # Fixed trials (params, user attrs) to run instead of asking the sampler (finishing).
        self.fixed: deque[tuple[dict[str, Any], dict[str, Any]]] | None = None
        self._recovered = False
        # One-shot: `search.trials` counts distinct sub-networks (a duplicate costs nothing
        # and says nothing); a sampler that only repeats itself ends the phase.
        self.distinct = spec.search.strategy == "one-shot"
        self._repeats_in_a_row = 0
        self._max_repeats = max(200, 2 * spec.search.trials)
        # One-shot: a proposal that repeats a done (or running) sub-network is answered from
        # the cache and followed by a one-step mutation of it that is new, if one is found: a
        # sampler settling on the front's few smallest configs would otherwise spend the
        # driver's time on asks that build nothing.
        self._mutant: tuple[dict[str, Any], int] | None = None
        self._mutation_rng = random.Random(spec.search.seed)
        # The sampler's next trial, asked while every worker was busy (right after a result
        # was told), so that the next worker to free up starts it at once (_ask_ahead).
        self._ahead: _Job | None = None

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> LoopStats:
        """Run trials until ``search.trials`` are complete (or the search stops early)."""
        if not self._recovered:
            self._recover()
            self._recovered = True
            self._save_predictors()
            self._done_at_start = self._counted()
        self._refresh("start")
        return self._drive()

    def run_fixed(self, trials: list[tuple[dict[str, Any], dict[str, Any]]], *,
                  phase: str) -> LoopStats:
        """Run exactly ``trials`` -- ``(params, user_attrs)`` pairs, each enqueued and asked
        when a worker is free, never the sampler's own proposals -- then return.

        The finishing rungs of a one-shot search run this way; a trial whose key is already
        complete is told from that trial, as any duplicate.
        """
        if not self._recovered:
            raise RuntimeError("run_fixed() follows run(): the study is recovered there")
        self.fixed, self.phase = deque(trials), phase
        try:
            self._refresh(f"{phase}: {len(trials)} trial(s)")
            return self._drive()
        finally:
            self.fixed = None

    def _drive(self) -> LoopStats:
        import ray

        while True:
            self._fill()
            pings = self.pool.pending_pings()
            if not self.in_flight and not self._has_queued_work():
                break
            if not self.in_flight and not pings and not self.pool.has_idle():
                break  # nothing can run: every worker slot is gone (PlacementError raised)
            t0 = time.perf_counter()
            refs = list(self.in_flight) + list(pings)
            ready, _ = ray.wait(refs, num_returns=1, timeout=self._wait_timeout())
            self.stats.wait_s += time.perf_counter() - t0
            for ref in ready:
                if ref in self.in_flight:
                    self._collect(ref)
                else:
                    self._on_ping(ref)
            now = time.monotonic()
            self._check_timeouts(now)
            if not self.in_flight:
                self.pool.check_start_timeout(now)
            self._sync(min_interval_s=1.0)
        if self._ahead is not None:  # asked ahead, and no worker was left to start it
            self._fail(self._ahead.trial, "the search ended before a worker could start it",
                       kind=FailKind.INTERRUPTED)
            self._ahead = None
        if self._predictors_dirty:
            self._save_predictors()
        self._sync()
        self.stats.completed, self.stats.cached, self.stats.failed = (
            self.completed, self.cached, self.failed)
        self.stats.wall_s = time.monotonic() - self._t0
        return self.stats

    def _has_queued_work(self) -> bool:
        if self.retry or self.revived or self._ahead is not None:
            return True
        return self._can_ask()

    def _can_ask(self) -> bool:
        if self.fixed is not None:
            return bool(self.fixed) and self._stop_reason() is None
        return self._counted() + self._outstanding() < self.target and self._stop_reason() is None

    def _counted(self) -> int:
        """Completed trials towards ``search.trials``: distinct ones in a one-shot search."""
        return self.completed - self.cached if self.distinct else self.completed

    def _outstanding(self) -> int:
        return (len(self.in_flight) + len(self.retry) + len(self.revived)
                + len(self.completing) + sum(len(v) for v in self.waiting.values())
                + (self._ahead is not None))

    def _stop_reason(self) -> tuple[StopReason, str] | None:
        """Why no new trial may start (the reason and its words), or None."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            return (StopReason.TIME_BUDGET,
                    f"time budget reached (search.timeout_s={self.spec.search.timeout_s:g})")
        if self.session_failures >= self.spec.search.max_failures and self.session_failures:
            return (StopReason.MAX_FAILURES,
                    f"{self.session_failures} failed trials (search.max_failures)")
        if self.distinct and self.fixed is None and self._repeats_in_a_row >= self._max_repeats:
            return (StopReason.EXHAUSTED,
                    f"the sampler proposed {self._repeats_in_a_row} already evaluated "
                    "configurations in a row (the space is nearly exhausted)")
        return None

    def _wait_timeout(self) -> float:
        timeout = 1.0
        limit = self.spec.search.trial_timeout_s
        if limit:
            now = time.monotonic()
            for job in self.in_flight.values():
                timeout = min(timeout, max(0.0, job.submitted + limit - now))
        return timeout

    def _sync(self, *, min_interval_s: float = 0.0) -> None:
        if self.sync is not None:
            self.sync(min_interval_s=min_interval_s)

    # -- recovery -------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Count what the study holds; take up trials a dead driver left RUNNING."""
        import optuna
        from optuna.trial import TrialState

        running = []
        built = []
        for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number):
            if t.state == TrialState.COMPLETE:
                self.completed += 1
                self.cached += TrialAttr.CACHED_FROM in t.user_attrs
                self._note_done(t)
                if TrialAttr.CACHED_FROM not in t.user_attrs:
                    built.append(t)
            elif t.state == TrialState.RUNNING:
                running.append(t)
            elif (t.state == TrialState.FAIL
                  and t.user_attrs.get(TrialAttr.FAIL_KIND) != FailKind.INTERRUPTED):
                self.failed += 1
                key = t.user_attrs.get(TrialAttr.KEY)
                if t.user_attrs.get(TrialAttr.FAIL_KIND) == FailKind.BUILD and key:
                    reason = str(t.user_attrs.get(TrialAttr.FAIL_REASON, "")).strip().splitlines()
                    self.build_failed.setdefault(key, (t.number, reason[0] if reason else ""))
        # The predictors learn the built candidates again, in the order they completed.
        for t in sorted(built, key=lambda t: (t.datetime_complete is None, t.datetime_complete,
                                               t.number)):
            manifest = self._manifest(t.user_attrs.get(TrialAttr.ARTIFACT_DIR))
            if manifest is not None:
                self.predictors.observe(manifest)
        for frozen in running:
            # A RUNNING trial from storage becomes a live Trial again (its params are fixed).
            trial = optuna.trial.Trial(self.study, frozen._trial_id)
            self.stats.recovered += 1
            finishing = frozen.user_attrs.get(TrialAttr.PHASE) == Phase.FINISH
            if self._counted() + len(self.revived) >= self.target and not finishing:
                self._fail(trial, "left RUNNING by a stopped driver and not needed: the search "
                           "already has its trials", kind=FailKind.INTERRUPTED)
                continue
            key = frozen.user_attrs.get(TrialAttr.KEY)
            manifest = (self.verify(artifact_path(self.run_dir, key), key=key)
                        if key and key not in self.cache else None)
            if key in self.cache:
                self._tell_cached(trial, self.cache[key])
            elif manifest is not None:
                cfg = CandidateConfig.model_validate(manifest.config)
                self._complete(_Job(trial, cfg, recovery_epochs=frozen.user_attrs.get(
                    TrialAttr.RECOVERY_EPOCHS)), result_from_manifest(manifest))
            else:
                self.revived.append(trial)
        if running:
            self.progress.log(f"resume: {len(running)} trial(s) were left RUNNING; "
                              f"{len(self.revived)} will be re-run")
        if not self.study.trials:
            self.study.enqueue_trial(self.base_params, user_attrs={TrialAttr.IS_BASE: True})
            if self.distinct and "precision" in self.base_params:
                # One-shot: the unpruned base at each other precision of the space too (the
                # quantization-only candidates); in a space of 10^5 sub-networks the sampler
                # would rarely propose them, and they are part of any final front.
                for p in self.space.dimensions.get("precision", ()):
                    if p != self.base_params["precision"]:
                        self.study.enqueue_trial({**self.base_params, "precision": p},
                                                 user_attrs={TrialAttr.BASE_PRECISION: p})
            for i, seed in enumerate(self.spec.search.seed_configs):
                self.study.enqueue_trial(seed, user_attrs={TrialAttr.SEED_CONFIG: i})

    # -- filling workers ------------------------------------------------------------------------

    def _fill(self) -> None:
        stop = self._stop_reason()
        reason = stop[1] if stop else None
        if reason and (self.retry or self.revived):
            for job in list(self.retry):
                self._fail(job.trial, f"search stopped ({reason}) before its retry",
                           kind=FailKind.INTERRUPTED, errors=job.errors,
                           attempts=job.attempt - 1)
            for trial in list(self.revived):
                self._fail(trial, f"search stopped ({reason}) before it was re-run",
                           kind=FailKind.INTERRUPTED)
            self.retry.clear()
            self.revived.clear()
        if reason and self._ahead is not None:
            self._fail(self._ahead.trial, f"search stopped ({reason}) before it started",
                       kind=FailKind.INTERRUPTED)
            self._ahead = None
        if stop and self.stats.stopped is None and self._counted() < self.target:
            self.stats.stop_reason, self.stats.stopped = stop
            self.progress.log(f"stopping: {reason}; waiting for {len(self.in_flight)} trial(s)")
        while self.pool.has_idle():
            job = self._next_job()
            if job is None:
                return
            self._submit(job)

    def _next_job(self) -> _Job | None:
        if self.retry:
            return self.retry.popleft()
        while self.revived:
            job = self._dedupe(self.revived.popleft())
            if job is not None:
                return job
        if self._ahead is not None:
            job, self._ahead = self._ahead, None
            self.stats.asked_ahead += 1
            return job
        while self._can_ask():
            t0 = time.perf_counter()
            if self.fixed is not None:
                params, attrs = self.fixed.popleft()
                self.study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
            elif self._mutant is not None:
                params, parent = self._mutant
                self._mutant = None
                self.study.enqueue_trial(params, user_attrs={TrialAttr.MUTATED_FROM: parent},
                                         skip_if_exists=False)
            trial = self.study.ask()
            self.stats.ask_s += time.perf_counter() - t0
            job = self._dedupe(trial)
            if job is None and self.distinct and self.fixed is None:
                self._mutant = self._mutate(trial)
            if job is not None and not self._prescreened(job):
                return job
        return None

    def _mutate(self, trial: Any) -> tuple[dict[str, Any], int] | None:
        """A one-step mutation of ``trial``'s params (one parameter the config uses, set to
        another of its choices) whose sub-network is neither done, failed nor in flight; None
        when a few random tries find none."""
        t0 = time.perf_counter()
        params = dict(trial.params)
        choices = self.space.param_choices()
        if set(params) != set(choices):
            return None
        layers = int(params["layers_kept"])
        used = [k for k, v in choices.items() if len(v) > 1 and not (
            k.rsplit("_", 1)[0] in self.space.per_layer and int(k.rsplit("_", 1)[1]) >= layers)]
        busy = ({j.key for j in self.in_flight.values()} | {j.key for j in self.retry}
                | set(self.completing) | set(self.waiting) | set(self.cache)
                | set(self.build_failed))
        rng = self._mutation_rng
        try:
            for _ in range(32):
                if not used:
                    return None
                name = rng.choice(used)
                value = rng.choice([c for c in choices[name] if c != params[name]])
                new = {**params, name: value}
                try:
                    key = job_key(self.space.config_from_params(new))
                except ValueError:  # not a valid config (a custom dimension's own check)
                    continue
                if key not in busy:
                    return new, int(trial.number)
            return None
        finally:
            self.stats.ask_s += time.perf_counter() - t0

    def _prescreened(self, job: _Job) -> bool:
        """Tell ``job`` PRUNED, unbuilt, when its predicted latency rules it out."""
        from optuna.trial import TrialState

        ua = job.trial.user_attrs
        if (not self.spec.search.prescreen or ua.get(TrialAttr.IS_BASE)
                or TrialAttr.SEED_CONFIG in ua or TrialAttr.BASE_PRECISION in ua):
            return False
        if self._skips_in_a_row >= self.spec.search.prescreen_max_consecutive:
            self.progress.log(f"pre-screen: {self._skips_in_a_row} candidates skipped in a row "
                              f"(search.prescreen_max_consecutive); building trial "
                              f"{job.trial.number} anyway")
            self._skips_in_a_row = 0
            return False
        t0 = time.perf_counter()
        screen = self.predictors.screen(job.cfg, self.cache.values())
        if screen is None:
            self._skips_in_a_row = 0
            self.stats.ask_s += time.perf_counter() - t0
            return False
        trial = job.trial
        trial.set_user_attr(TrialAttr.PRESCREENED, True)
        trial.set_user_attr(TrialAttr.PRESCREEN_REASON, screen.reason)
        trial.set_user_attr(TrialAttr.PRESCREEN_PREDICTED, screen.predicted)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.stats.ask_s += time.perf_counter() - t0
        self.stats.prescreened += 1
        self._skips_in_a_row += 1
        self.progress.event("trial_prescreened", trial=trial.number, key=job.key,
                            reason=screen.reason)
        self._refresh(f"trial {trial.number} skipped before building: {_short(job.cfg)}: "
                      f"{screen.reason}")
        return True

    def _dedupe(self, trial: Any) -> _Job | None:
        """A job for ``trial``, or None when its config is done (told now) or in flight."""
        t0 = time.perf_counter()
        cfg = self.space.suggest(trial)
        epochs = trial.user_attrs.get(TrialAttr.RECOVERY_EPOCHS)
        key = job_key(cfg, epochs)
        if trial.user_attrs.get(TrialAttr.KEY) != key:
            trial.set_user_attr(TrialAttr.CONFIG, cfg.model_dump(mode="json"))
            trial.set_user_attr(TrialAttr.KEY, key)
        if self.phase is not None and TrialAttr.PHASE not in trial.user_attrs:
            trial.set_user_attr(TrialAttr.PHASE, self.phase)
        self.stats.ask_s += time.perf_counter() - t0
        if key in self.cache:
            self._tell_cached(trial, self.cache[key])
            return None
        if key in self.build_failed:  # a build error is the config's: never build it again
            number, reason = self.build_failed[key]
            trial.set_user_attr(TrialAttr.FAILED_LIKE, number)
            self._fail(trial, f"same config as trial {number}, whose build failed: {reason}",
                       kind=FailKind.BUILD)
            return None
        if key in self.completing or any(j.key == key for j in self.in_flight.values()) or any(
                j.key == key for j in self.retry):
            self.waiting.setdefault(key, []).append(trial)
            return None
        resume = None
        if trial.user_attrs.get(TrialAttr.RESUME_FROM):
            resume = {"key": str(trial.user_attrs[TrialAttr.RESUME_FROM]),
                      "epochs": int(trial.user_attrs[TrialAttr.RESUME_EPOCHS])}
            from paretoforge.models.io import WEIGHTS_NAME

            if not (artifact_path(self.run_dir, resume["key"]) / WEIGHTS_NAME).is_file():
                # the rung before's artifact is gone (removed by hand): recover it whole
                self.progress.log(f"trial {trial.number}: the weights of {resume['key']} "
                                  "are missing from the run; recovered from its supernet "
                                  f"weights for all {epochs} epochs instead")
                trial.set_user_attr(TrialAttr.RESUME_FROM, None)
                resume = None
        return _Job(trial, cfg, recovery_epochs=epochs, resume=resume)

    def _submit(self, job: _Job) -> None:
        t0 = time.perf_counter()
        slot = self.pool.take()
        assert slot is not None  # _fill checked has_idle()
        job.slot = slot.index
        job.submitted = time.monotonic()
        config = job.cfg.model_dump(mode="json")
        if job.recovery_epochs is None:
            ref = slot.handle.evaluate.remote(job.trial.number, config)
        else:
            resume = None if job.resume is None else resume_payload(
                self.run_dir, job.resume, in_place=bool(slot.info.get("in_place", True)))
            ref = slot.handle.evaluate.remote(job.trial.number, config,
                                              recovery_epochs=job.recovery_epochs,
                                              resume=resume)
        self.in_flight[ref] = job
        self.stats.submit_s += time.perf_counter() - t0
        again = f" (attempt {job.attempt})" if job.attempt > 1 else ""
        self.progress.event("trial_started", trial=job.trial.number, key=job.key,
                            worker=slot.index, attempt=job.attempt, pid=slot.info.get("pid"),
                            node_id=slot.info.get("node_id"))
        self._refresh(f"trial {job.trial.number} started on worker {slot.index}{again}: "
                      f"{_short(job.cfg)}")

    # -- results --------------------------------------------------------------------------------

    def _on_ping(self, ref: Any) -> None:
        index = self.pool.pending_pings()[ref]
        what = self.pool.on_ping(ref)
        slot = self.pool.slots[index]
        if what == "ready":
            if self.stats.first_ready_s is None:
                self.stats.first_ready_s = time.monotonic() - self._t0
            self.progress.event("worker_ready", worker=index, **slot.info)

    def _collect(self, ref: Any) -> None:
        import ray

        job = self.in_flight.pop(ref)
        try:
            res = ray.get(ref)
        except Exception as e:
            if is_worker_lost(e):
                self._worker_lost(job, e)
                return
            self.pool.release(job.slot)
            cause = _cause(e)
            kind = _fail_kind(cause)
            if kind is FailKind.BUILD:
                self.build_failed[job.key] = (job.trial.number,
                                                  (str(cause).strip().splitlines() or [""])[0])
            self._fail(job.trial, f"{type(cause).__name__}: {cause}", kind=kind,
                       errors=job.errors, attempts=job.attempt)
            return
        self.pool.release(job.slot)
        # The freed worker gets its next trial first, then this one is told: the driver's
        # bookkeeping of a result (the artifact, the predictors, the study's writes; ~0.1 s
        # a trial in the quickstart, a fifth of a one-shot trial) no longer idles a worker.
        # The sampler asks without this one result, as it does without every result still
        # in flight.
        self.completing[job.key] = job
        try:
            self._fill()
        finally:  # told even if handing out the next trial failed
            self.completing.pop(job.key, None)
            self._finish(job, res)
        self._ask_ahead()

    def _ask_ahead(self) -> None:
        """Ask the sampler for the next trial now, with the result just told, while every
        worker is busy: the next worker to free up then starts it at once, instead of
        idling through an ask (a tenth of a one-shot trial's time on the quickstart)."""
        if (self._ahead is None and self.fixed is None and not self.pool.has_idle()
                and not self.retry and not self.revived and self._stop_reason() is None):
            self._ahead = self._next_job()

    def _finish(self, job: _Job, res: dict[str, Any]) -> None:
        try:
            self._complete(job, res)
        except KeyError as e:  # the worker did not report an objective's metric
            self._fail(job.trial, f"the worker's result has no metric {e}; it reported "
                       f"{sorted(res.get(TrialAttr.METRICS, {}))}", kind=FailKind.ERROR,
                       attempts=job.attempt)

    def _worker_lost(self, job: _Job, e: BaseException) -> None:
        info = self.pool.slots[job.slot].info
        where = f"worker {job.slot} (pid {info.get('pid')}, node {str(info.get('node_id'))[:8]})"
        first = (str(e).strip().splitlines() or [""])[0][:300]
        job.errors.append(f"attempt {job.attempt} on {where}: worker lost: "
                          f"{type(e).__name__}: {first}")
        self._replace(job.slot)
        self.progress.event("worker_lost", worker=job.slot, trial=job.trial.number,
                            attempt=job.attempt, error=type(e).__name__)
        if job.attempt <= self.spec.search.max_retries:
            self.stats.retried += 1
            job.attempt += 1
            self.retry.append(job)
            self.progress.log(f"{where} was lost during trial {job.trial.number} "
                              f"({type(e).__name__}); it is replaced and the trial re-run "
                              f"(attempt {job.attempt} of {self.spec.search.max_retries + 1})")
            return
        self._fail(job.trial, f"worker lost on all {job.attempt} attempts "
                   f"(search.max_retries={self.spec.search.max_retries}); last: "
                   f"{type(e).__name__}: {first}", kind=FailKind.WORKER_LOST, errors=job.errors,
                   attempts=job.attempt)

    def _check_timeouts(self, now: float) -> None:
        limit = self.spec.search.trial_timeout_s
        if not limit:
            return
        for ref, job in list(self.in_flight.items()):
            if now - job.submitted <= limit:
                continue
            del self.in_flight[ref]
            self._replace(job.slot)  # a sync actor cannot be interrupted: kill it, replace it
            self.stats.timed_out += 1
            self._fail(job.trial, f"timeout: ran {now - job.submitted:.1f}s, over "
                       f"search.trial_timeout_s={limit:g}; its worker was replaced",
                       kind=FailKind.TIMEOUT, errors=job.errors, attempts=job.attempt)

    def _replace(self, index: int) -> None:
        old = self.pool.replace(index)
        pid = old.info.get("pid")
        if isinstance(pid, int):
            remove_partial(self.run_dir, pid=pid)

    def _complete(self, job: _Job, res: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        t0 = time.perf_counter()
        if self.accept is not None:
            try:
                res = self.accept(res)
            except ParetoforgeError as e:
                self._fail(job.trial, f"artifact not accepted: {e}", kind=FailKind.ERROR,
                           errors=job.errors, attempts=job.attempt)
                return
        manifest = self._manifest(res.get(TrialAttr.ARTIFACT_DIR))
        predicted: dict[str, float] = {}
        if self.predictors.predicted:
            try:
                predicted = self.predictors.predicted_metrics(manifest or {})
            except MeasurementError as e:
                self._fail(job.trial, f"MeasurementError: {e}", kind=FailKind.MEASUREMENT,
                           errors=job.errors, attempts=job.attempt)
                return
        metrics = {**res[TrialAttr.METRICS], **predicted}
        values = [float(metrics[o.metric]) for o in self.spec.objectives]
        trial = job.trial
        for k in _RESULT_ATTRS:
            trial.set_user_attr(k, metrics if k == TrialAttr.METRICS else res.get(k))
        if predicted:  # names of the metrics a predictor gave, not a measurement
            trial.set_user_attr(TrialAttr.PREDICTED_METRICS, sorted(predicted))
        if manifest is not None:
            self.predictors.observe(manifest)
            self._save_predictors(force=False)
        trial.set_user_attr(TrialAttr.ATTEMPTS, job.attempt)
        if job.errors:
            trial.set_user_attr(TrialAttr.ATTEMPT_ERRORS, job.errors)
        if res.get(TrialAttr.REUSED_ARTIFACT):
            trial.set_user_attr(TrialAttr.REUSED_ARTIFACT, True)
        self._set_constraints(trial, metrics)
        frozen = self.study.tell(trial, values, state=TrialState.COMPLETE)
        self.stats.tell_s += time.perf_counter() - t0
        self.completed += 1
        self._repeats_in_a_row = 0
        self._note_done(frozen)
        self.progress.event("trial_done", trial=trial.number, attempts=job.attempt)
        self._refresh(f"trial {trial.number} done: {_short(job.cfg)} -> " + ", ".join(
            f"{o.metric}={v:.4g}" for o, v in zip(self.spec.objectives, values, strict=True)))
        for twin in self.waiting.pop(job.key, []):
            self._tell_cached(twin, frozen)

    def _set_constraints(self, trial: Any, metrics: dict[str, float]) -> None:
        if not self.spec.constraints:
            return
        cons = constraint_values(self.spec, metrics)
        trial.set_user_attr(TrialAttr.CONSTRAINTS, cons)
        for i, c in enumerate(cons):
            trial.set_constraint(f"c{i}", c)

    def _tell_cached(self, trial: Any, src: Any) -> None:
        from optuna.trial import TrialState

        t0 = time.perf_counter()
        for k in (*_RESULT_ATTRS, TrialAttr.PREDICTED_METRICS):
            if k in src.user_attrs:
                trial.set_user_attr(k, src.user_attrs[k])
        trial.set_user_attr(TrialAttr.CACHED_FROM, src.number)
        self._set_constraints(trial, src.user_attrs[TrialAttr.METRICS])
        self.study.tell(trial, list(src.values), state=TrialState.COMPLETE)
        self.stats.tell_s += time.perf_counter() - t0
        self.completed += 1
        self._repeats_in_a_row += 1
        self.cached += 1
        self._refresh(f"trial {trial.number} cached (same config as trial {src.number})")

    def _fail(self, trial: Any, reason: str, *, kind: FailKind,
              errors: list[str] | None = None, attempts: int | None = None) -> None:
        from optuna.trial import TrialState

        first = reason.strip().splitlines()[0][:500] if reason.strip() else kind.value
        trial.set_user_attr(TrialAttr.FAIL_REASON, reason[:4000])
        trial.set_user_attr(TrialAttr.FAIL_KIND, kind.value)  # a plain string in the study
        if attempts is not None:
            trial.set_user_attr(TrialAttr.ATTEMPTS, attempts)
        if errors:
            trial.set_user_attr(TrialAttr.ATTEMPT_ERRORS, errors)
        self.study.tell(trial, state=TrialState.FAIL)
        if kind.counts_as_failure:
            self.failed += 1
            self.session_failures += 1
        self.progress.event("trial_failed", trial=trial.number, kind=kind.value)
        key = trial.user_attrs.get(TrialAttr.KEY)
        for twin in self.waiting.pop(key, []) if key else []:
            twin.set_user_attr(TrialAttr.FAILED_LIKE, trial.number)
            self._fail(twin, f"same config as failed trial {trial.number}: {first}", kind=kind)
        self._refresh(f"trial {trial.number} FAILED ({kind.value}): {first}")

    # -- predictors -----------------------------------------------------------------------------

    def _manifest(self, artifact_dir: str | None) -> dict[str, Any] | None:
        """A built candidate's manifest as the predictors read it (validated), or None
        (stand-in workers write none that validates)."""
        if not artifact_dir:
            return None
        path = (self.run_dir / artifact_dir / "manifest.json").resolve()
        if self.run_dir.resolve() not in path.parents:  # read from the study: stay in the run
            return None
        manifest = read_manifest(path)
        return None if manifest is None else manifest.model_dump(mode="json")

    def _save_predictors(self, *, force: bool = True) -> None:
        """Rewrite ``predictors.json`` when there is something to say (a predictor with data);
        unless ``force``, at most every 2 s (the loop writes the last state when it ends, and
        a resumed driver rebuilds the predictors from the manifests)."""
        now = time.monotonic()
        if not force and now - self._predictors_saved < 2.0:
            self._predictors_dirty = True
            return
        p = self.predictors
        if p.predicted or any(x.n_samples for x in p.measured.values()):
            p.save()
        self._predictors_saved, self._predictors_dirty = now, False

    # -- progress -------------------------------------------------------------------------------

    def _note_done(self, t: Any) -> None:
        """Count a completed trial into the running front, worst point and hypervolume."""
        key = t.user_attrs.get(TrialAttr.KEY)
        if key is not None:
            self.cache.setdefault(key, t)
        values = [float(v) for v in t.values]
        if self._worst is None:
            self._worst = list(values)
        else:
            self._worst = [min(w, v) if d == "maximize" else max(w, v)
                           for w, v, d in zip(self._worst, values, self.directions, strict=True)]
        feasible = all(c <= 0 for c in (t.user_attrs.get(TrialAttr.CONSTRAINTS) or []))
        if feasible:
            self._front.add(values)
        self._front_all.add(values)

    def _refresh(self, event: str) -> None:
        front = self._front if len(self._front) else self._front_all
        best: dict[str, float] = {}
        hv = None
        if len(front) and self._worst is not None:
            for i, o in enumerate(self.spec.objectives):
                vals = [p[i] for p in front.points]
                best[o.metric] = max(vals) if o.direction == "maximize" else min(vals)
            hv = hypervolume(front.points, self.directions, self._worst)
        self.progress.update(
            event, done=self._counted(), running=len(self.in_flight), failed=self.failed,
            cached=self.cached, prescreened=self.stats.prescreened, front=len(front), best=best,
            hypervolume=hv,
            hv_reference=dict(zip([o.metric for o in self.spec.objectives], self._worst or [],
                                  strict=False)),
            eta_s=self._eta(),
        )

    def _eta(self) -> float | None:
        """Seconds to the end: remaining trials at this session's rate, capped by the budget."""
        now = time.monotonic()
        done = self._counted() - self._done_at_start
        remaining = max(0, self.target - self._counted())
        eta = None
        if remaining == 0:
            eta = 0.0
        elif done > 0:
            eta = remaining * (now - self._t0) / done
        if self._deadline is not None:
            left = max(0.0, self._deadline - now)
            eta = left if eta is None else min(eta, left)
        return eta


def _cause(e: BaseException) -> BaseException:
    """What the worker raised: a RayTaskError's ``cause``, else ``e`` itself."""
    from ray.exceptions import RayTaskError

    if isinstance(e, RayTaskError) and isinstance(e.cause, BaseException):
        return e.cause
    return e


def _fail_kind(cause: BaseException) -> FailKind:
    """The failure kind of an error a worker raised, by its type."""
    if isinstance(cause, BuildError):
        return FailKind.BUILD
    if isinstance(cause, MeasurementError):
        return FailKind.MEASUREMENT
    return FailKind.ERROR


def _short(cfg: CandidateConfig) -> str:
    return (f"layers={cfg.layers_kept} heads={cfg.heads_kept} ffn={cfg.ffn_kept} "
            f"{cfg.precision}")
