"""The driver: connect Ray, prepare once, start workers, run the loop, write the front.

:func:`run_search` is the whole search; :mod:`paretoforge.orchestrator.loop` is the
ask-and-tell loop itself and :mod:`paretoforge.orchestrator.pool` the worker actors. The worker
class is injectable (``worker_cls``): anything with the constructor and methods of
:class:`~paretoforge.orchestrator.protocol.CandidateWorker` runs under the same driver, Ray and
storage (:class:`paretoforge.testing.FakeWorker` does, for tests and benchmarks).

One driver at a time per run directory: it holds an exclusive lock on ``<run>/.driver.lock``
while it runs (the operating system drops it when the driver dies, however it dies).

If the local cluster the driver started loses its only node (its raylet exits: killed, or the
out-of-memory killer), a watchdog stops the search, the driver starts a new local cluster and
resumes the run, as ``paretoforge resume`` would (at most :data:`LOCAL_RESTARTS` times); a
cluster it joined is never restarted.

Example:
    >>> summary = run_search(Spec.from_file("examples/quickstart.yaml"),
    ...                      "runs/quickstart")  # doctest: +SKIP
    >>> summary.completed  # doctest: +SKIP
    40
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paretoforge._io import atomic_write_json, atomic_write_text
from paretoforge.exceptions import ParetoforgeError, PlacementError, SpecError
from paretoforge.names import Phase, StopReason
from paretoforge.orchestrator.progress import Progress
from paretoforge.orchestrator.protocol import CandidateWorker
from paretoforge.orchestrator.runstore import RunStore
from paretoforge.search_spaces import CandidateConfig, SearchSpace
from paretoforge.spec import Spec

__all__ = ["LOCAL_RESTARTS", "SearchSummary", "check_before_start", "connect_ray", "run_lock",
           "run_search"]

# How many times a search restarts its own local cluster after losing its node.
LOCAL_RESTARTS = 3


@dataclass
class SearchSummary:
    """What a search (or a resumed one) ended with; counts are the whole run's."""

    run_dir: Path
    completed: int
    failed: int
    cached: int
    front: list[Any]
    wall_s: float
    loop_s: float = 0.0
    stopped: str | None = None  # why it stopped early, in words
    stop_reason: StopReason | None = None  # the same, to branch on
    stats: dict[str, Any] = field(default_factory=dict)
    #: The driver's preparation: ``task_s``, ``base_s``, ``base_threads`` (only where this
    #: run trained the base), ``importance_s``, ``supernet_s``.
    timings: dict[str, float] = field(default_factory=dict)


def check_before_start(spec: Spec) -> SearchSpace:
    """Everything that can be checked before Ray or training starts; raise SpecError."""
    from paretoforge.models.recipes import get_recipe

    space: SearchSpace = spec.space.search_space()
    if spec.model.path is not None:
        from paretoforge.pipeline.prepare import checkpoint_shape

        space.check_model(*checkpoint_shape(spec.model.path))
    else:
        try:
            recipe = get_recipe(spec.model.recipe, **spec.model.overrides)
        except ParetoforgeError as e:
            raise SpecError(f"model: {e}") from None
        space.check_model(recipe.num_layers, recipe.num_heads)
    from paretoforge.samplers import check_seed_configs

    check_seed_configs(spec.search.seed_configs, space.param_choices())
    return space


def _preload_modules() -> None:
    """Import torch, transformers and ONNX Runtime (what preparing the base and a first build
    import anyway); a failure is left to the code that needs the module to report."""
    try:
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception:  # noqa: BLE001, S110  (reported where the module is used)
        pass


def connect_ray(spec: Spec, *, address: str | None = None, debug: bool = False) -> bool:
    """Connect to ``address`` / spec / RAY_ADDRESS, or start a local cluster; True if started.

    Joining a cluster is explicit: with none of the three, a new local cluster of this process
    starts, never the one Ray's current-cluster file names. It gets exactly the CPUs the
    workers reserve (at least one), plus, for a one-shot search, those of the supernet's Ray
    Train workers, so that the search's workers start while the supernet trains. It listens
    on 127.0.0.1 only, and has no dashboard unless the spec asks for one (then on
    127.0.0.1). An address that does not answer as a Ray cluster raises PlacementError
    within about 30 s (:func:`~paretoforge._ray_auth.connect_cluster`).
    """
    import ray

    from paretoforge._ray_auth import connect_cluster, start_local_cluster

    if ray.is_initialized():
        return False
    addr = address or spec.cluster.address or os.environ.get("RAY_ADDRESS")
    if addr:
        connect_cluster(addr, debug=debug)
        return True
    need = spec.cluster.workers * spec.cluster.cpus_per_worker
    if spec.search.strategy == "one-shot":  # the supernet's trainer, beside the workers
        need += spec.one_shot.trainers(spec.cluster.workers) * spec.cluster.cpus_per_worker
    start_local_cluster(num_cpus=max(int(-(-need // 1)), 1), dashboard=spec.cluster.dashboard,
                        debug=debug)
    return True


def _check_run_dir(spec: Spec, run_dir: Path) -> None:
    """Refuse a run directory that holds a different search (search/cluster may change)."""
    spec_path = run_dir / "spec.yaml"
    if spec_path.is_file():
        old = Spec.from_file(spec_path)
        keep = ("search", "cluster", "run_dir")
        a = {k: v for k, v in _recorded(old).model_dump(mode="json").items() if k not in keep}
        b = {k: v for k, v in _recorded(spec).model_dump(mode="json").items() if k not in keep}
        if a != b:
            changed = sorted(k for k in a if a[k] != b.get(k))
            raise SpecError(
                f"run directory {str(run_dir)!r} holds a different search (fields {changed} "
                "differ); choose a new --run-dir, or delete that directory"
            )


def _recorded(spec: Spec) -> Spec:
    """The spec as the run records it (``spec.yaml``): its storage URL without a password."""
    from paretoforge.orchestrator.storage import url_without_password

    if not spec.storage or url_without_password(spec.storage) == spec.storage:
        return spec
    return spec.model_copy(update={"storage": url_without_password(spec.storage)})


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``<run>/.driver.lock`` exclusively; raise if another driver holds it."""
    path = Path(run_dir) / ".driver.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise ParetoforgeError(
                f"run directory {str(run_dir)!r} is in use by another driver ({holder}); wait "
                "for it to finish, or stop it and run `paretoforge resume` on the directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def run_search(spec: Spec, run_dir: str | Path | RunStore, *, address: str | None = None,
               progress: Progress | None = None, debug: bool = False,
               worker_cls: type[CandidateWorker] | None = None,
               worker_kwargs: dict[str, Any] | None = None,
               verify: Callable[..., dict[str, Any] | None] | None = None) -> SearchSummary:
    """Run (or continue) the search described by ``spec`` into ``run_dir``.

    Args:
        spec: The validated search spec.
        run_dir: The run directory (created; a directory of a different search is refused):
            a local path, or a storage URI (``s3://bucket/run``, ``file:///shared/run``)
            whose working copy the driver mirrors there
            (:class:`~paretoforge.orchestrator.runstore.RunStore`).
        address: Ray address; else spec.cluster.address, RAY_ADDRESS, or a new local cluster.
        progress: Where progress goes (default: a live panel on a terminal, else lines).
        debug: Ray logs to the terminal.
        worker_cls: The worker class made a Ray actor per worker (default
            :class:`~paretoforge.orchestrator.worker.Worker`); the contract is
            :class:`~paretoforge.orchestrator.protocol.CandidateWorker`.
        worker_kwargs: Extra keyword arguments for ``worker_cls``, past the protocol's.
        verify: How a resumed search checks the artifact of a trial a stopped driver left
            RUNNING before it reuses it instead of rebuilding: ``verify(directory, key=key)``
            returns the manifest or None (default
            :func:`~paretoforge.pipeline.artifacts.verify_artifact`, real artifacts only;
            a fake search that resumes passes :func:`paretoforge.testing.verify_fake_artifact`).

    Returns:
        The run's counts (completed, cached, failed), its front, and the loop's timings.
    """
    t_start = time.perf_counter()
    store = run_dir if isinstance(run_dir, RunStore) else RunStore.open(run_dir)
    if verify is not None:
        store.verify = verify
    space = check_before_start(spec)
    # The modules the base model and the build need, and the task's data, load while the
    # study opens and the local cluster starts: its processes leave a core idle for seconds,
    # and these imports and the task take 6 s of CPU.
    from paretoforge.pipeline.prepare import preload_task

    preload_task(spec)
    preload = threading.Thread(target=_preload_modules, name="pf-preload", daemon=True)
    preload.start()
    store.pull()  # a URI run: its journal and small files, into the working copy
    run_dir = store.local
    from paretoforge.hw_profiles import get_profile

    profiles = [get_profile(p) for p in spec.measured_profiles]
    _check_run_dir(spec, run_dir)
    from paretoforge.orchestrator.storage import open_storage

    # A database is reached before the run directory is made: a driver missing or a server
    # down is one line, with nothing written and nothing started.
    opened = open_storage(run_dir, spec) if spec.storage else None
    progress = progress or Progress(spec.search.trials)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        _check_run_dir(spec, run_dir)  # again: another driver may have written it meanwhile
        atomic_write_text(run_dir / "spec.yaml", _recorded(spec).to_yaml())
        store.push_file("spec.yaml")
        for restart in range(LOCAL_RESTARTS + 1):
            lost: dict[str, Any] = {}
            try:
                return _run_locked(spec, store, space, profiles, progress, t_start,
                                   address=address, debug=debug, worker_cls=worker_cls,
                                   worker_kwargs=worker_kwargs or {}, verify=verify,
                                   opened=opened, lost=lost, preload=preload)
            except BaseException:
                if not lost or restart == LOCAL_RESTARTS:
                    raise
            opened = None  # the storage is opened again with the study
            progress.log(f"the local Ray node was lost (its raylet exited, code "
                         f"{lost['raylet']}); restarting the local cluster and resuming the "
                         f"search ({restart + 1} of {LOCAL_RESTARTS})")
        raise AssertionError("unreachable")  # the last attempt returned or raised


def _local_raylet() -> Any:
    """The raylet process of the local cluster this process started (a Popen), or None."""
    try:
        from ray._private import ray_constants
        from ray._private import worker as ray_worker

        node = ray_worker._global_node
        procs = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET) if node else None
        return procs[0].process if procs else None
    except Exception:  # Ray's internals moved: no watchdog, as before
        return None


def _watch_raylet(raylet: Any, lost: dict[str, Any], stop: threading.Event) -> threading.Thread:
    """Interrupt the main thread once ``raylet`` exits (unless ``stop`` is set first), noting
    its exit code in ``lost["raylet"]``."""
    import _thread

    def watch() -> None:
        while not stop.wait(1.0):
            rc = raylet.poll()
            if rc is not None and not stop.is_set():
                lost["raylet"] = rc
                _thread.interrupt_main()
                return

    t = threading.Thread(target=watch, name="pf-raylet-watch", daemon=True)
    t.start()
    return t


def _run_locked(spec: Spec, store: RunStore, space: SearchSpace, profiles: list[Any],
                progress: Progress, t_start: float, *, address: str | None, debug: bool,
                worker_cls: type[CandidateWorker] | None, worker_kwargs: dict[str, Any],
                verify: Callable[..., dict[str, Any] | None] | None,
                opened: tuple[Any, Any] | None = None,
                lost: dict[str, Any] | None = None,
                preload: threading.Thread | None = None) -> SearchSummary:
    import ray

    from paretoforge.orchestrator.bench import start_benches, stop_benches
    from paretoforge.orchestrator.loop import SearchLoop
    from paretoforge.orchestrator.pool import WorkerPool
    from paretoforge.orchestrator.results import load_run, score_test_split
    from paretoforge.orchestrator.runstore import accept_artifact, start_keeper
    from paretoforge.orchestrator.storage import open_storage, open_study
    from paretoforge.orchestrator.worker import Worker
    from paretoforge.pipeline import package_versions
    from paretoforge.pipeline.artifacts import remove_partial
    from paretoforge.samplers import make_sampler

    log = progress.log
    run_dir = store.local
    remove_partial(run_dir)  # we hold the run lock: no worker of this run is writing
    storage, backend = opened or open_storage(run_dir, spec)
    study = open_study(run_dir, spec, sampler=make_sampler(spec.search), storage=storage)
    started = connect_ray(spec, address=address, debug=debug)
    if preload is not None:
        # Its imports done before this thread imports any of those modules: a module half
        # imported by another thread (transformers' lazy module) can be seen without its names.
        preload.join()
    stop_watch = threading.Event()
    local = started and not (address or spec.cluster.address or os.environ.get("RAY_ADDRESS"))
    raylet = _local_raylet() if local and lost is not None else None
    if raylet is not None and lost is not None:
        _watch_raylet(raylet, lost, stop_watch)
    pool: WorkerPool | None = None
    gates: dict[str, Any] = {}
    benches: dict[str, list[Any]] = {}
    keeper: Any = None
    try:
        _check_placement(profiles, spec)
        log(f"ray: {len(ray.nodes())} node(s), {ray.cluster_resources().get('CPU', 0):.0f} CPUs;"
            f" run directory {store.uri}" + (f" (working copy {run_dir})" if store.remote
                                               else ""))
        # Gates and benches before any build: a bench that cannot be placed refuses the run now.
        gates = _start_gates()
        benches = start_benches(profiles, gates)
        for name, refs in benches.items():
            log(f"profile {name}: measured on {len(refs)} node(s) with Ray resource "
                f"{refs[0].resource!r}")
        from paretoforge.pipeline.prepare import prepare_cached

        prepared = prepare_cached(spec, log=log)
        one_shot = spec.search.strategy == "one-shot"
        spec_json = _recorded(spec).model_dump(mode="json")  # workers get no password
        actor_cls = ray.remote(num_cpus=spec.cluster.cpus_per_worker, max_restarts=0,
                               max_task_retries=0)(worker_cls or Worker)
        keeper = start_keeper(run_dir)
        # The bundle new workers start from (no test split on the workers), put on first need.
        bundle: dict[str, Any] = {}

        def new_worker(i: int, holder: str) -> Any:
            if "ref" not in bundle:
                bundle["ref"] = ray.put(bundle.pop("prepared").for_workers())
            handle = actor_cls.remote(bundle["ref"], spec_json, str(run_dir), index=i,
                                      gates=gates, holder=holder, benches=benches,
                                      keeper=keeper, **worker_kwargs)
            if bundle.get("warm"):  # before its ping: the slot is free once warm
                handle.warm.remote()
            return handle

        if one_shot:
            from paretoforge.pipeline.oneshot import attach_supernet

            if _room_to_start_workers_early(spec, worker_cls or Worker):
                # The workers start (process, imports, base model, reference artifact) while
                # the supernet trains: Ray Train's start-up leaves a core idle for seconds.
                bundle.update(prepared=_ship_user_task(prepared, space), warm=True)
                pool = WorkerPool(new_worker, spec.cluster.workers, gates=gates, log=log)
                log(f"workers: {spec.cluster.workers} starting while the supernet trains")
            prepared = attach_supernet(prepared, spec, space=space, log=log)
        atomic_write_json(run_dir / "run.json", {
            "study": spec.name, "objectives": [o.model_dump() for o in spec.objectives],
            "base_model": prepared.base_info, "prepare_timings": prepared.timings,
            "versions": package_versions(),
            "supernet": None if prepared.supernet is None else {
                k: v for k, v in prepared.supernet.items() if k not in ("weights", "importance")},
        })
        store.push_file("run.json")
        prepared = _ship_user_task(prepared, space)
        # a worker started from here on gets the whole bundle, supernet included
        bundle.clear()
        bundle["prepared"] = prepared
        if pool is not None:  # started early: each gets the supernet before its first trial
            _attach_supernet(pool, ray.put(prepared.supernet), log)

        def sync(*, min_interval_s: float = 0.0) -> None:
            if backend is not None:
                backend.sync(min_interval_s=min_interval_s)
            # at most a second behind: a trial asked is in the remote journal before its
            # artifact can be uploaded, so a resume elsewhere finds it RUNNING and reuses it
            store.push_journal(min_interval_s=1.0 if min_interval_s else 0.0)
            if not min_interval_s:
                store.push_meta()

        if pool is None:
            pool = WorkerPool(new_worker, spec.cluster.workers, gates=gates, log=log)
        loop = SearchLoop(spec, study, space, pool, progress, run_dir=run_dir,
                          base_params=space.base_params(prepared.num_layers, prepared.num_heads),
                          sync=sync, verify=_fetching_verify(store),
                          accept=functools.partial(accept_artifact, store))
        if one_shot:
            loop.phase = Phase.ONE_SHOT.value
        with progress:
            stats = loop.run()
            if one_shot and spec.one_shot.finish_candidates and stats.stop_reason in (
                    None, StopReason.EXHAUSTED):
                from paretoforge.orchestrator.finish import finish_front

                base_shape = (prepared.num_layers, prepared.num_heads)
                stats.finished = finish_front(
                    loop, spec, log=log, is_unpruned=lambda c: CandidateConfig.model_validate(
                        c).is_unpruned(*base_shape),
                    compute_fraction=lambda c: CandidateConfig.model_validate(
                        c).compute_fraction(*base_shape))
            stats.wall_s = loop.stats.wall_s
        run = load_run(run_dir)
        _fetch_front(run, store)  # a resumed remote run's working copy may lack them
        if spec.search.retime_rounds and stats.stop_reason != StopReason.MAX_FAILURES:
            from paretoforge.orchestrator.retime import retime_front

            slots = []  # every idle worker of one node: they share the members
            while (slot := pool.take()) is not None:
                slots.append(slot)
            node = slots[0].info.get("node_id") if slots else None
            for other in slots:
                if other.info.get("node_id") != node:
                    pool.release(other.index)  # ratios are timed on one machine's cores only
            slots = [s for s in slots if s.info.get("node_id") == node]
            if not slots:
                log("front re-time: no worker is up; the front keeps the search's latencies")
            else:
                try:
                    retime_front(run, [s.handle for s in slots],
                                 rounds=spec.search.retime_rounds, study=study, store=store,
                                 log=log, seed=spec.search.seed)
                except Exception as e:  # the search's own figures stand; say why, go on
                    log(f"front re-time failed ({type(e).__name__}: {str(e).splitlines()[0]}"
                        f"); the front keeps the search's latencies")
                finally:
                    for s in slots:
                        pool.release(s.index)
        score_test_split(run, prepared, study=study, log=log)  # once, after every decision
        front = run.front()
        atomic_write_json(run_dir / "front.json", [m.to_json() for m in front])
        store.push_meta()
        return SearchSummary(run_dir=run_dir, completed=loop.completed, failed=loop.failed,
                             cached=loop.cached, front=front,
                             wall_s=time.perf_counter() - t_start, loop_s=stats.wall_s,
                             stopped=stats.stopped, stop_reason=stats.stop_reason,
                             stats=stats.to_json(), timings=dict(prepared.timings))
    finally:
        stop_watch.set()  # from here on the cluster is ours to stop
        if backend is not None:
            backend.sync()
        store.push_journal()
        if pool is not None:
            pool.shutdown()
        stop_benches(benches)
        if keeper is not None:
            with contextlib.suppress(Exception):
                ray.kill(keeper, no_restart=True)
        for g in gates.values():
            with contextlib.suppress(Exception):
                ray.kill(g, no_restart=True)
        if started:
            from paretoforge._ray_auth import stop_local_cluster

            stop_local_cluster()  # ray.shutdown(), without its second for the monitor


def _fetch_front(run: Any, store: RunStore) -> None:
    """Bring the front's members and the base into the working copy of a remote run, for the
    re-time and the test split: a driver resumed on another machine has only what it built."""
    if not store.remote:
        return
    trials = [run.trial(m.trial) for m in run.front()]
    base = run.base_trial()
    for t in trials + ([base] if base is not None else []):
        store.fetch_artifact(run.artifact_dir(t).name)


def _fetching_verify(store: RunStore) -> Callable[..., Any]:
    """How the loop checks a RUNNING trial's artifact on resume: in the working copy, fetched
    from the run's storage URI first when the copy lacks it."""
    def verify(directory: Any, *, key: str | None = None) -> Any:
        if key and store.remote:
            store.fetch_artifact(key)
        return store.verify(directory, key=key)

    return verify


def _attach_supernet(pool: Any, supernet_ref: Any, log: Callable[[str], None]) -> None:
    """Hand the supernet to every worker the pool started before it was trained, and wait
    until each has it (they have been warming since; the wait is what is left of it). A worker
    that could not take it is replaced by one started from the whole bundle: none searches
    without it."""
    import ray

    calls = [(slot.index, slot.handle.attach_supernet.remote(supernet_ref))
             for slot in pool.slots if slot.state != "gone"]
    for index, ref in calls:
        try:
            ray.get(ref)
        except Exception as e:  # its process died, or the supernet did not load there
            cause = getattr(e, "cause", None) or e  # a RayTaskError wraps what was raised
            text = str(cause).strip()
            log(f"worker {index} could not take the supernet ({type(cause).__name__}: "
                f"{text.splitlines()[0][:200] if text else ''}); starting another")
            pool.replace(index)


def _room_to_start_workers_early(spec: Spec, worker_cls: type) -> bool:
    """Whether the search's workers can start while the supernet trains: the cluster has free
    CPUs for both (a local cluster of a one-shot search is started with them), and the
    worker class takes its supernet late (``attach_supernet``)."""
    import ray

    if not (hasattr(worker_cls, "warm") and hasattr(worker_cls, "attach_supernet")):
        return False
    cpus = spec.cluster.cpus_per_worker
    need = (spec.cluster.workers + spec.one_shot.trainers(spec.cluster.workers)) * cpus
    return float(ray.available_resources().get("CPU", 0.0)) >= need


def _ship_user_task(prepared: Any, space: SearchSpace) -> Any:
    """A task or custom dimensions registered in the user's own modules (not importable on
    the workers) travel by value with the prepared bundle; the workers register them from
    there. Returns the bundle with the space's custom dimensions."""
    import dataclasses
    import sys

    from ray import cloudpickle

    dims = space.custom_dimensions()
    for module in {type(prepared.task_impl).__module__, *(d.module for d in dims)}:
        if (module != "__main__" and not module.startswith("paretoforge.")
                and module in sys.modules):
            cloudpickle.register_pickle_by_value(sys.modules[module])
    return dataclasses.replace(prepared, dimensions=dims) if dims else prepared


def _check_placement(profiles: list[Any], spec: Spec | None = None) -> None:
    """A profile bound to a Ray resource is measured only where a node carries it: on a worker
    whose node does, else on a bench of such a node (:mod:`paretoforge.orchestrator.bench`).
    A profile that ``requires`` CPU features is refused unless every node that may measure
    it has them; a ``prediction.profiles`` source measured on a machine that differs from
    its profile's nodes is refused (:func:`~paretoforge.orchestrator.prediction.check_transfers`).
    Each node's machine identity is asked for (a task on every node, a process start on each)
    only for those two checks; otherwise a node is calibrated by its first worker
    (:meth:`Worker.warm <paretoforge.orchestrator.worker.Worker.warm>` or its first
    measurement), not before the base model trains."""
    import ray

    from paretoforge.hw_profiles import served_profiles
    from paretoforge.orchestrator.prediction import check_transfers, cluster_machines

    served = served_profiles(ray.cluster_resources(), [p.name for p in profiles])
    for p in profiles:
        if not served[p.name]:
            raise PlacementError(
                f"profile {p.name!r} needs a node with Ray resource {p.resource!r} and no node "
                f"in the cluster has one; start one with `ray start --address ... --resources "
                f"'{{\"{p.resource}\": 1}}'`, drop the profile, or serve it by prediction "
                f"from measurements taken on that hardware earlier: `prediction: {{profiles: "
                f"{{{p.name}: {{source: RUN_DIR}}}}}}`"
            )
    if not any(p.requires for p in profiles) and (spec is None
                                                     or not spec.prediction.profiles):
        return
    machines, resources = cluster_machines()
    for p in profiles:
        _check_requires(p, machines, resources)
    if spec is not None:
        check_transfers(spec, machines, resources)


def _check_requires(profile: Any, machines: dict[str, Any], resources: dict[str, Any]) -> None:
    """Refuse ``profile`` when a node that may measure it lacks a feature it ``requires``."""
    if not profile.requires:
        return
    res = profile.resource
    may = [n for n, r in resources.items()
           if (float(r.get("CPU", 0)) > 0 if res in (None, "CPU") else float(r.get(res, 0)) > 0)]
    lacking = {n: profile.missing_features(machines.get(n, {}).get("isa")) for n in may}
    lacking = {n: f for n, f in lacking.items() if f}
    if not lacking:
        return
    nid, missing = next(iter(lacking.items()))
    if len(lacking) == len(may):
        fix = "run the search on a machine that has them, or drop `requires` from the profile"
    else:
        fix = (f"give the nodes that have them a Ray resource (`ray start ... --resources "
               f"'{{\"hw:{profile.name}\": 1}}'`) and set `resource: hw:{profile.name}` on "
               f"the profile")
    raise PlacementError(
        f"profile {profile.name!r} requires {', '.join(profile.requires)} and "
        f"{len(lacking)} of the {len(may)} node(s) that may measure it lack "
        f"{', '.join(missing)} (node {nid[:12]}: "
        f"{' '.join(machines.get(nid, {}).get('isa') or []) or 'features unknown'}); {fix}"
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
