"""The front's latencies, timed again together after the search: the figures a user quotes.

During the search each candidate is measured when it is built, its rounds back to back: they
share one machine state, so they agree with each other better than with a re-measurement
minutes later (benchmarks/measurement_fidelity.py: intervals from 3 consecutive rounds held
the re-measured ratio for 50-60% of the quickstart's members). Once the front is known, its
members and the base are timed again (:meth:`Worker.retime
<paretoforge.orchestrator.worker.Worker.retime>`) by the search's idle workers, each taking
its share of them on its own cores, all at once: ``search.retime_rounds`` rounds, each
visiting every member of the share in a new shuffled order, each visit one round of the
profile's protocol against the run's reference. A member's rounds are then spread over the
whole stage.

What it reports, per member and profile: the median ratio to the base over the re-time's
rounds (``rel_p50``: all members timed side by side, so the ranking is of one moment), and
the interval ``[rel_low, rel_high]``: the range of every round the graph was timed in against
the base, at its build and at the re-time -- two moments minutes apart, because a small
model's ratio to its base itself moves with the machine's state (benchmarks/
measurement_fidelity.py: the same front re-measured minutes apart moved by up to 16%) --
widened to the machine states the whole run saw (:func:`_widen_by_machine_state`). The
front (``front``, ``front --json``, ``report``, exports) quotes these; the search's own figures
stay in the study and in ``metrics_in_search``. No search decision uses them: the front's
membership was decided before, on the search's values.

Example:
    >>> retimed = retime_front(run, pool, rounds=7)  # doctest: +SKIP
    >>> retimed["12"]["cpu-1t"]["rel_p50"], retimed["12"]["cpu-1t"]["rel_low"]  # doctest: +SKIP
    (0.331, 0.318)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from paretoforge.manifest import read_manifest
from paretoforge.names import StudyAttr, TrialAttr

__all__ = ["retime_front", "retime_run", "retimed_metrics"]


def retime_front(run: Any, worker: Any, *, rounds: int, study: Any | None = None,
                 store: Any = None, log: Callable[[str], None] = print,
                 seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """Re-time the run's front members and its base on one worker, or on several at once.

    Args:
        run: The finished :class:`~paretoforge.orchestrator.results.Run`.
        worker: A :class:`~paretoforge.orchestrator.worker.Worker`: the search's idle Ray
            actor, or one in this process (``paretoforge retime``); or a list of the
            search's idle actors, which share the members (each its share, against the
            reference on its own cores, all at once).
        rounds: Interleaved rounds; 0 does nothing.
        study: Where to record it (default: the run's study).
        store: The run's store (a remote one gets the updated manifests).
        log: Where the summary line goes.
        seed: Seed of the shuffles.

    Returns:
        Trial (string) -> profile -> record (see ``Worker.retime``), also in the study's
        :attr:`~paretoforge.names.StudyAttr.RETIMED` and each manifest's
        ``measurements.<profile>.front_retime``.
    """
    if rounds <= 0:
        return {}
    trials = [run.trial(m.trial) for m in run.front()]
    base = run.base_trial()
    if base is not None and base.number not in {t.number for t in trials}:
        trials.append(base)
    if not trials:
        return {}
    workers = list(worker) if isinstance(worker, list | tuple) else [worker]
    if not all(hasattr(w, "retime") for w in workers):  # a stand-in worker class (tests)
        log("front re-time: the worker class cannot re-time; the front keeps the search's "
            "latencies")
        return {}
    # Several workers (Ray actors) share the members: each times its share against the
    # reference on its own cores, all at the same time.
    workers = workers[:len(trials)] if all(_is_actor(w) for w in workers) else workers[:1]
    shares: list[list[dict[str, Any]]] = [[] for _ in workers]
    for i, w in enumerate(workers):
        in_place = bool(_call(w, "ping").get("in_place", True))
        for t in trials[i::len(workers)]:
            cfg = t.user_attrs.get(TrialAttr.CONFIG, t.params)
            m: dict[str, Any] = {"trial": t.number, "key": t.user_attrs.get(TrialAttr.KEY),
                                 "precision": cfg.get("precision", "fp32")}
            d = run.artifact_dir(t)
            if not in_place:  # a worker that does not see the run directory gets the files
                m["files"] = {n: (d / n).read_bytes() for n in
                              ("model.onnx", "config.json", "model.safetensors")
                              if (d / n).is_file()}
            else:
                m["key"] = d.name  # the artifact's own key (a cached twin's, for one cached)
            shares[i].append(m)
    got: dict[str, dict[str, dict[str, Any]]] = {}
    if len(workers) > 1:
        import ray

        for part in ray.get([w.retime.remote(share, rounds=rounds, seed=seed)
                             for w, share in zip(workers, shares, strict=True)]):
            got.update(part)
    else:
        got = _call(workers[0], "retime", shares[0], rounds=rounds, seed=seed)
    done_at = time.time()
    for v in got.values():
        for rec in v.values():
            rec["measured_at"] = done_at  # what a later re-measurement's age counts from
    manifests = {t.number: read_manifest(run.artifact_dir(t)) for t in trials}
    for t in trials:  # the interval, part 1: every round this graph was timed in the run
        manifest = manifests[t.number]
        for p, rec in got.get(str(t.number), {}).items():
            if rec.get("rel_rounds") is None:
                continue
            meas = (manifest.measurements.get(p) or {}) if manifest is not None else {}
            searched = list(meas.get("rel_rounds") or [])
            rec["retime_rel_low"], rec["retime_rel_high"] = rec["rel_low"], rec["rel_high"]
            rec["search_rel_rounds"] = searched
            rec["search_ref_round_p50_ms"] = list(meas.get("ref_round_p50_ms") or [])
            rec["rel_low"] = min([rec["rel_low"], *searched])
            rec["rel_high"] = max([rec["rel_high"], *searched])
            rec["interval"] = (f"range of every round this graph was timed in against the base:"
                               f" {len(searched)} at its build, {rec['rounds']} at the front's "
                               "re-time")
    _widen_by_machine_state(run, got)  # part 2: the machine states the whole run saw
    study = study if study is not None else run.study
    old = dict(study.user_attrs.get(StudyAttr.RETIMED) or {})
    old.update(got)
    study.set_user_attr(StudyAttr.RETIMED, old)
    for t in trials:
        manifest = manifests[t.number]
        if manifest is None or str(t.number) not in got:
            continue
        directory = run.artifact_dir(t)
        meas = {p: dict(v) for p, v in manifest.measurements.items()}
        for p, rec in got[str(t.number)].items():
            if p in meas:
                meas[p]["front_retime"] = rec
        manifest.model_copy(update={"measurements": meas}).write(directory / "manifest.json")
        if store is not None and getattr(store, "remote", False):
            store.push_file(str((directory / "manifest.json").relative_to(store.local)))
    wall = max((r.get("wall_s", 0.0) for v in got.values() for r in v.values()), default=0.0)
    on = f" on {len(workers)} workers at once" if len(workers) > 1 else ""
    log(f"front re-time: {len(got)} member(s) and the base timed together in {rounds} "
        f"interleaved rounds{on} ({wall:.1f} s); the front quotes these latencies")
    return got


def _is_actor(worker: Any) -> bool:
    return hasattr(getattr(worker, "retime", None), "remote")


def retime_run(run_dir: str | os.PathLike[str], *, rounds: int | None = None,
               log: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, Any]]]:
    """Re-time a finished run's front on this machine, now (``paretoforge retime RUN``).

    The same stage as at the end of a search, by the same worker code in this process: e.g.
    on a quiet machine, or after the search ran with ``search.retime_rounds: 0``. The run's
    reference (the base's fp32 artifact) and its one base latency are the search's, so the
    figures stay comparable with the rest of the run.

    Args:
        run_dir: A finished run directory.
        rounds: Interleaved rounds (default: the spec's ``search.retime_rounds``, or 7).

    Raises:
        SpecError: ``rounds`` below 1, or the run has no front.
    """
    from paretoforge._system import pin_process, usable_cores
    from paretoforge.exceptions import SpecError
    from paretoforge.orchestrator.results import load_run
    from paretoforge.orchestrator.worker import Worker
    from paretoforge.pipeline.prepare import prepare_cached

    run = load_run(run_dir)
    spec = run.spec
    n = rounds if rounds is not None else (spec.search.retime_rounds or 7)
    if n < 1:
        raise SpecError(f"retime: --rounds must be >= 1, got {n}")
    if not run.front():
        raise SpecError(f"retime: {run.dir} has no completed trial, so no front to re-time")
    prepared = prepare_cached(spec, log=log)  # the base and its data: the reference's key
    affinity = usable_cores()
    try:
        worker = Worker(prepared.for_workers(), spec.model_dump(mode="json"), str(run.dir),
                        index=0)
        got = retime_front(run, worker, rounds=n, log=log, seed=spec.search.seed)
    finally:
        pin_process(affinity)  # the worker pinned this process to its own core
    from paretoforge._io import atomic_write_json

    atomic_write_json(run.dir / "front.json", [m.to_json() for m in load_run(run.dir).front()])
    return got


def retimed_metrics(metrics: dict[str, float], retimed: dict[str, dict[str, Any]] | None
                    ) -> dict[str, float]:
    """``metrics`` with each re-timed profile's ``latency_p50_ms@P`` replaced by the re-timed
    drift-free median (``latency_p50_abs_ms@P`` by the absolute one).

    Example:
        >>> retimed_metrics({"latency_p50_ms@cpu-1t": 0.2, "accuracy": 0.9},
        ...                 {"cpu-1t": {"drift_free_p50_ms": 0.21, "p50_ms": 0.25}})
        {'latency_p50_ms@cpu-1t': 0.21, 'accuracy': 0.9, 'latency_p50_abs_ms@cpu-1t': 0.25}
    """
    out = dict(metrics)
    for p, rec in (retimed or {}).items():
        ranked = rec.get("drift_free_p50_ms")
        key = f"latency_p50_ms@{p}"
        if key in out:
            out[key] = float(rec["p50_ms"] if ranked is None else ranked)
        out[f"latency_p50_abs_ms@{p}"] = float(rec["p50_ms"])
    return out


def _widen_by_machine_state(run: Any, got: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Widen each member's interval to the machine states the whole run saw.

    A small model's ratio to its base is not free of the machine's state: when the base's own
    round median ``b`` moves, a sub-millisecond member's ratio moves with it (on an AVX-512
    machine a 0.05 ms member's ratio rose ~10% while the base slowed ~50%:
    benchmarks/measurement_fidelity.py, ``rho_ratio_vs_base_speed``). A re-measurement an hour
    later may find the machine in a state none of the member's own rounds saw, so their range
    alone under-covers it. The model, fitted on the front's own rounds (at its build and at
    the re-time, each a pair ``(b, r)``)::

        log r = a_member + gamma * (1 - r_member) * log b

    one ``gamma`` for every member (the base itself, ``r = 1``, has no slope), by least
    squares with its standard error ``se``. The sign is not trusted: the front's rounds see
    the machine in a narrow band of states, a single slow round decides it, and two fresh
    quickstart runs on one AVX2 machine gave -0.29 and +0.35. So the widening is symmetric,
    with the magnitude ``|gamma| + 2 se``: each member's interval becomes the hull of its
    rounds and ``exp(mean log r +- (|gamma| + 2 se) (1 - r) D)``, ``D`` the largest log-distance
    from the member's mean state to the 1st or 99th percentile of the base's round medians of
    every measured trial of the run (the states the run saw). ``gamma``, ``se``, the magnitude
    and the states go into the record (``state_gamma``, ``state_gamma_se``,
    ``state_sensitivity``, ``state_ref_range_ms``, ``state_rel_range``).
    """
    import numpy as np

    run_states = _run_reference_rounds(run)
    for p in {p for by in got.values() for p in by}:
        rows = []  # (trial, mean log b, mean log r, r, log b's, log r's)
        for t, by in got.items():
            rec = by.get(p)
            if not rec or rec.get("rel_rounds") is None:
                continue
            pairs = [(b, r) for b, r in zip(rec.get("search_ref_round_p50_ms") or [],
                                            rec.get("search_rel_rounds") or [], strict=False)]
            pairs += list(zip(rec.get("ref_round_p50_ms") or [], rec["rel_rounds"],
                              strict=False))
            pairs = [(float(np.log(b)), float(np.log(r))) for b, r in pairs if b > 0 and r > 0]
            if len(pairs) < 2:
                continue
            lb, lr = np.asarray(pairs).T
            rows.append((t, float(lb.mean()), float(lr.mean()), float(rec["rel_p50"]), lb, lr))
        states = run_states.get(p, [])
        if not rows or len(states) < 2:
            continue
        num = den = 0.0
        for _, mb, mr, r, lb, lr in rows:
            x = (1.0 - r) * (lb - mb)
            num += float((x * (lr - mr)).sum())
            den += float((x * x).sum())
        if den <= 0.0:
            continue
        gamma = num / den
        sq = sum(float(((lr - mr - gamma * (1.0 - r) * (lb - mb)) ** 2).sum())
                 for _, mb, mr, r, lb, lr in rows)
        dof = sum(len(lb) for *_, lb, _ in rows) - len(rows) - 1
        se = float(np.sqrt(sq / dof / den)) if dof > 0 else abs(gamma)
        sensitivity = abs(gamma) + 2.0 * se
        lo, hi = (float(v) for v in np.percentile(states, [1, 99]))
        for t, mb, mr, r, _, _ in rows:
            rec = got[t][p]
            half = sensitivity * abs(1.0 - r) * max(abs(np.log(lo) - mb), abs(np.log(hi) - mb))
            ends = [float(np.exp(mr - half)), float(np.exp(mr + half))]
            rec.update(state_gamma=round(gamma, 4), state_gamma_se=round(se, 4),
                       state_sensitivity=round(sensitivity, 4), state_ref_range_ms=[lo, hi],
                       state_rel_range=ends)
            rec["rel_low"] = min(rec["rel_low"], ends[0])
            rec["rel_high"] = max(rec["rel_high"], ends[1])
            rec["interval"] += (f", widened to the base's round medians the run saw "
                                f"({lo:.4g}-{hi:.4g} ms) by the front's ratio-vs-state "
                                f"sensitivity, either sign (|gamma| + 2 se = {sensitivity:.3f})")


def _run_reference_rounds(run: Any) -> dict[str, list[float]]:
    """Profile -> the base's round medians in every measured artifact's local manifest (each
    artifact once, however many trials were answered from it): the machine states the run
    was measured in. A remote run's artifact not in the working copy is skipped, not fetched."""
    out: dict[str, list[float]] = {}
    seen: set[str] = set()
    for t in run.trials():
        rel = t.user_attrs.get(TrialAttr.ARTIFACT_DIR)
        if not rel or rel in seen:
            continue
        seen.add(rel)
        manifest = read_manifest(run.dir / rel)
        for p, meas in (manifest.measurements if manifest is not None else {}).items():
            out.setdefault(p, []).extend(
                float(v) for v in (meas or {}).get("ref_round_p50_ms") or [] if v and v > 0)
    return out


def _call(worker: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """``worker.name(...)``, on a Ray actor (waited for) or a plain object."""
    method = getattr(worker, name)
    if hasattr(method, "remote"):
        import ray

        return ray.get(method.remote(*args, **kwargs))
    return method(*args, **kwargs)
