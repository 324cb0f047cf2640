"""The driver: Ray workers + an Optuna ask-and-tell loop; the driver owns every Optuna write.

    trial = study.ask() -> cfg = space.suggest(trial) -> cached? tell stored values
                                                      -> else a free worker evaluates cfg
    ray.wait(results) -> study.tell(trial, objective values) + user attrs

As many trials are in flight as there are workers, and never more than needed to reach the
requested number of completed trials. The unpruned fp32 base model is enqueued as trial 0.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretoforge._io import atomic_write_json, atomic_write_text
from paretoforge.exceptions import ParetoforgeError, PlacementError, SpecError
from paretoforge.orchestrator.progress import Progress
from paretoforge.orchestrator.results import load_run, open_study
from paretoforge.orchestrator.worker import Worker, package_versions
from paretoforge.search_spaces import CandidateConfig, SearchSpace
from paretoforge.spec import Spec

__all__ = ["SearchSummary", "check_before_start", "connect_ray", "run_search"]

MAX_ACTOR_RETRIES = 2  # a trial whose worker dies is re-run on a fresh worker this many times


@dataclass
class SearchSummary:
    run_dir: Path
    completed: int
    failed: int
    cached: int
    front: list[Any]
    wall_s: float


def check_before_start(spec: Spec) -> SearchSpace:
    """Everything that can be checked before Ray or training starts; raise SpecError."""
    from paretoforge.models.recipes import get_recipe

    try:
        recipe = get_recipe(spec.model.recipe, **spec.model.overrides)
    except ParetoforgeError as e:
        raise SpecError(f"model: {e}") from None
    space = SearchSpace.from_preset(spec.space.preset, spec.space.dimensions)
    space.check_model(recipe.num_layers, recipe.num_heads)
    return space


def connect_ray(spec: Spec, *, address: str | None = None, debug: bool = False) -> bool:
    """Connect to ``address`` / spec / RAY_ADDRESS, or start a local cluster; True if started.

    A local cluster gets exactly the CPUs the workers reserve (at least the machine's), no
    dashboard unless the spec asks for one (then on 127.0.0.1 only).
    """
    import logging

    import ray

    if ray.is_initialized():
        return False
    addr = address or spec.cluster.address or os.environ.get("RAY_ADDRESS")
    common: dict[str, Any] = {"logging_level": logging.DEBUG if debug else logging.WARNING,
                              "log_to_driver": debug}
    if addr:
        try:
            ray.init(address=addr, **common)
        except Exception as e:
            raise PlacementError(
                f"could not connect to the Ray cluster at {addr!r}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}. Check the address (ray status on "
                "the head node); a cluster with token auth needs RAY_AUTH_TOKEN set here"
            ) from None
        return True
    need = spec.cluster.workers * spec.cluster.cpus_per_worker
    num_cpus = max(int(-(-need // 1)), 1)
    ray.init(num_cpus=num_cpus, include_dashboard=spec.cluster.dashboard,
             dashboard_host="127.0.0.1", object_store_memory=256 * 1024**2, **common)
    return True


def _make_sampler(spec: Spec) -> Any:
    import optuna

    s = spec.search
    constraints_func = _constraints_func if spec.constraints else None
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=s.seed,
                                             constraints_func=constraints_func)
    return optuna.samplers.TPESampler(seed=s.seed, constraints_func=constraints_func,
                                      n_startup_trials=min(10, max(2, s.trials // 3)))


def _constraints_func(trial: Any) -> list[float]:
    return list(trial.user_attrs.get("constraints") or [])


def _constraint_values(spec: Spec, metrics: dict[str, float]) -> list[float]:
    """Optuna's convention: a value <= 0 means satisfied."""
    out = []
    for c in spec.constraints:
        v = metrics[c.metric]
        if c.min is not None:
            out.append(c.min - v)
        if c.max is not None:
            out.append(v - c.max)
    return out


def _prepare_run_dir(spec: Spec, run_dir: Path) -> None:
    spec_path = run_dir / "spec.yaml"
    if spec_path.is_file():
        old = Spec.from_file(spec_path)
        keep = ("search", "cluster", "run_dir")
        a = {k: v for k, v in old.model_dump(mode="json").items() if k not in keep}
        b = {k: v for k, v in spec.model_dump(mode="json").items() if k not in keep}
        if a != b:
            changed = sorted(k for k in a if a[k] != b.get(k))
            raise SpecError(
                f"run directory {str(run_dir)!r} holds a different search (fields {changed} "
                "differ); choose a new --run-dir, or delete that directory"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec_path, spec.to_yaml())


def run_search(spec: Spec, run_dir: str | Path, *, address: str | None = None,
               progress: Progress | None = None, debug: bool = False) -> SearchSummary:
    """Run (or continue) the search described by ``spec`` into ``run_dir``."""
    import optuna
    import ray

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    space = check_before_start(spec)
    from paretoforge.hw_profiles import get_profile

    profiles = [get_profile(p) for p in spec.profiles]
    _prepare_run_dir(spec, run_dir)
    progress = progress or Progress(spec.search.trials)
    log = progress.log

    started = connect_ray(spec, address=address, debug=debug)
    try:
        _check_placement(profiles)
        log(f"ray: {len(ray.nodes())} node(s), {ray.cluster_resources().get('CPU', 0):.0f} CPUs;"
            f" run directory {run_dir}")
        from paretoforge.orchestrator.prepare import prepare

        prepared = prepare(spec, log=log)
        atomic_write_json(run_dir / "run.json", {
            "study": spec.name, "objectives": [o.model_dump() for o in spec.objectives],
            "base_model": prepared.base_info, "prepare_timings": prepared.timings,
            "versions": package_versions(),
        })
        prepared_ref = ray.put(prepared)
        gates = _start_gates()
        spec_json = spec.model_dump(mode="json")
        worker_cls = ray.remote(num_cpus=spec.cluster.cpus_per_worker, max_restarts=0)(Worker)

        def new_worker(i: int) -> Any:
            return worker_cls.options(name=None).remote(prepared_ref, spec_json, str(run_dir),
                                                        index=i, gates=gates)

        workers = [new_worker(i) for i in range(spec.cluster.workers)]
        study = open_study(run_dir, spec, sampler=_make_sampler(spec))
        loop = _Loop(spec, study, space, workers, new_worker, progress, prepared)
        with progress:
            loop.run()
        run = load_run(run_dir)
        front = run.front()
        atomic_write_json(run_dir / "front.json", [m.to_json() for m in front])
        return SearchSummary(run_dir=run_dir, completed=loop.completed, failed=loop.failed,
                             cached=loop.cached, front=front,
                             wall_s=time.perf_counter() - t_start)
    finally:
        if started:
            ray.shutdown()
        del optuna


def _check_placement(profiles: list[Any]) -> None:
    """A profile bound to a Ray resource is measured only where a node carries it."""
    import ray

    have = ray.cluster_resources()
    for p in profiles:
        res = getattr(p, "resource", None)
        if res and have.get(res, 0) <= 0:
            raise PlacementError(
                f"profile {p.name!r} needs a node with Ray resource {res!r} and no node in the "
                f"cluster has one; start one with `ray start --address ... --resources "
                f"'{{\"{res}\": 1}}'` or drop the profile"
            )


def _start_gates() -> dict[str, Any]:
    """One :class:`CoreGate` actor per alive node, pinned to it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from paretoforge.orchestrator.gate import CoreGate

    gate_cls = ray.remote(num_cpus=0, max_concurrency=64)(CoreGate)
    gates = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        nid = node["NodeID"]
        gates[nid] = gate_cls.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=nid, soft=False)
        ).remote()
    return gates


class _Loop:
    """The ask-and-tell loop, with dedup by config key and retries on worker death."""

    def __init__(self, spec: Spec, study: Any, space: SearchSpace, workers: list[Any],
                 new_worker: Any, progress: Progress, prepared: Any) -> None:
        self.spec = spec
        self.study = study
        self.space = space
        self.workers = workers
        self.new_worker = new_worker
        self.progress = progress
        self.prepared = prepared
        self.target = spec.search.trials
        self.in_flight: dict[Any, tuple[Any, CandidateConfig, int, int]] = {}
        self.waiting: dict[str, list[Any]] = {}  # key -> trials waiting on an in-flight twin
        self.free = list(range(len(workers)))
        self.cache: dict[str, Any] = {}
        self.completed = self.failed = self.cached = 0
        self.deadline = (time.monotonic() + spec.search.timeout_s) if spec.search.timeout_s else None

    # -- setup ----------------------------------------------------------------------------------

    def _recover_state(self) -> None:
        """Continue an existing study: fail trials left RUNNING and re-ask their params."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                self.completed += 1
                self.cache.setdefault(t.user_attrs["key"], t)
            elif t.state == TrialState.RUNNING:
                self.study.tell(t.number, state=TrialState.FAIL)
                self.study.enqueue_trial(t.params, skip_if_exists=False)
            elif t.state == TrialState.FAIL:
                self.failed += 1
        if not self.study.trials:
            base = self.space.base_params(self.prepared.num_layers, self.prepared.num_heads)
            self.study.enqueue_trial(base, user_attrs={"is_base": True})

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        self._recover_state()
        self._refresh("start")
        while True:
            self._fill()
            if not self.in_flight:
                break
            import ray

            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                self._collect(ref)

    def _stop_asking(self) -> str | None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "time budget reached"
        if self.failed >= self.spec.search.max_failures and self.failed > 0:
            return f"{self.failed} failed trials (search.max_failures)"
        return None

    def _outstanding(self) -> int:
        return len(self.in_flight) + sum(len(v) for v in self.waiting.values())

    def _fill(self) -> None:
        while self.free and self.completed + self._outstanding() < self.target:
            reason = self._stop_asking()
            if reason:
                if not self.in_flight:
                    self.progress.log(f"stopping: {reason}")
                return
            trial = self.study.ask()
            cfg = self.space.suggest(trial)
            trial.set_user_attr("config", cfg.model_dump(mode="json"))
            trial.set_user_attr("key", cfg.key)
            if cfg.key in self.cache:
                self._tell_cached(trial, self.cache[cfg.key])
                continue
            if any(c.key == cfg.key for _, c, _, _ in self.in_flight.values()):
                self.waiting.setdefault(cfg.key, []).append(trial)
                continue
            self._submit(trial, cfg, self.free.pop(0), attempt=1)

    def _submit(self, trial: Any, cfg: CandidateConfig, w: int, *, attempt: int) -> None:
        ref = self.workers[w].evaluate.remote(trial.number, cfg.model_dump(mode="json"))
        self.in_flight[ref] = (trial, cfg, w, attempt)
        self._refresh(f"trial {trial.number} started on worker {w}: {_short(cfg)}")

    def _collect(self, ref: Any) -> None:
        import ray
        from optuna.trial import TrialState

        trial, cfg, w, attempt = self.in_flight.pop(ref)
        try:
            res = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            # The worker process died (killed, OOM, node lost): replace it, retry the trial.
            self.workers[w] = self.new_worker(w)
            if attempt <= MAX_ACTOR_RETRIES:
                self.progress.log(f"worker {w} died during trial {trial.number}; retrying "
                                  f"(attempt {attempt + 1})")
                self._submit(trial, cfg, w, attempt=attempt + 1)
                return
            self._fail(trial, f"worker died {attempt} times: {type(e).__name__}")
            self.free.append(w)
            return
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            self._fail(trial, f"{type(cause).__name__}: {cause}")
            self.free.append(w)
            return
        self.free.append(w)
        metrics = res["metrics"]
        values = [metrics[o.metric] for o in self.spec.objectives]
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("artifact_dir", res["artifact_dir"])
        trial.set_user_attr("timings", res["timings"])
        trial.set_user_attr("worker", res["worker"])
        trial.set_user_attr("node_id", res["node_id"])
        trial.set_user_attr("attempts", attempt)
        self._set_constraints(trial, metrics)
        frozen = self.study.tell(trial, values, state=TrialState.COMPLETE)
        self.cache[cfg.key] = frozen
        self.completed += 1
        self._refresh(f"trial {trial.number} done: {_short(cfg)} -> " + ", ".join(
            f"{o.metric}={v:.4g}" for o, v in zip(self.spec.objectives, values)))
        for twin in self.waiting.pop(cfg.key, []):
            self._tell_cached(twin, frozen)

    def _set_constraints(self, trial: Any, metrics: dict[str, float]) -> None:
        if not self.spec.constraints:
            return
        cons = _constraint_values(self.spec, metrics)
        trial.set_user_attr("constraints", cons)
        for i, c in enumerate(cons):
            trial.set_constraint(f"c{i}", c)

    def _tell_cached(self, trial: Any, src: Any) -> None:
        from optuna.trial import TrialState

        for k in ("metrics", "artifact_dir", "timings", "worker", "node_id"):
            if k in src.user_attrs:
                trial.set_user_attr(k, src.user_attrs[k])
        trial.set_user_attr("cached_from", src.number)
        self._set_constraints(trial, src.user_attrs["metrics"])
        self.study.tell(trial, list(src.values), state=TrialState.COMPLETE)
        self.completed += 1
        self.cached += 1
        self._refresh(f"trial {trial.number} cached (same config as trial {src.number})")

    def _fail(self, trial: Any, reason: str) -> None:
        from optuna.trial import TrialState

        first = reason.strip().splitlines()[0][:500]
        trial.set_user_attr("fail_reason", reason[:4000])
        self.study.tell(trial, state=TrialState.FAIL)
        self.failed += 1
        key = trial.user_attrs.get("key")
        for twin in self.waiting.pop(key, []) if key else []:
            twin.set_user_attr("fail_reason", f"same config as failed trial {trial.number}")
            self.study.tell(twin, state=TrialState.FAIL)
            self.failed += 1
        self._refresh(f"trial {trial.number} FAILED: {first}")

    def _refresh(self, event: str) -> None:
        from paretoforge.orchestrator.results import non_dominated

        done = [t for t in self.cache.values()]
        front = 0
        best: dict[str, float] = {}
        if done:
            dirs = [o.direction for o in self.spec.objectives]
            front = len(non_dominated([tuple(t.values) for t in done], dirs))
            for i, o in enumerate(self.spec.objectives):
                vals = [t.values[i] for t in done]
                best[o.metric] = max(vals) if o.direction == "maximize" else min(vals)
        self.progress.update(event, done=self.completed, running=len(self.in_flight),
                             failed=self.failed, cached=self.cached, front=front, best=best)


def _short(cfg: CandidateConfig) -> str:
    return (f"layers={cfg.layers_kept} heads={cfg.heads_kept} ffn={cfg.ffn_kept} "
            f"{cfg.precision}")
