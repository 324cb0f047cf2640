"""A longer recovery for the Pareto members only, recorded apart from the search-time numbers.

During the search every pruned candidate gets the same short distillation budget
(``recovery``), so that candidates are compared fairly and the search stays cheap. Once the
front is known, its pruned members can be distilled again from the base model with a larger
budget: ``paretoforge refine RUN --epochs 12``. Each member is rebuilt from scratch with the
same surgery (the importance ranking is the search's: same model, data and seed), recovered
with the new budget, exported, quantized, scored on the same validation split and measured on the
same profiles, by the same worker code, one member after the other on this machine. The members
are the search's front (chosen on validation); the worker gets no test split. Once rebuilt,
each refined member is scored once on the test split, as the search's members were after the
search, and that number is recorded beside the validation one, never used to choose.

Nothing in the search is changed: the study, its front and the artifacts under
``<run>/artifacts/`` keep their search-time numbers. The refined checkpoints go to
``<run>/refined/<setting>/artifacts/<key>/`` (each complete and deployable, with its own
manifest and checksums) and ``<run>/refined/<setting>/refined.json`` lists, per member, the
search-time metrics beside the refined ones (validation and test), with the recovery used for
each.

Example:
    >>> rows = refine_front("runs/minilm", epochs=12)  # doctest: +SKIP
    >>> r = rows[0]  # doctest: +SKIP
    >>> r["search"]["embedding_cosine"], r["refined"]["embedding_cosine"]  # doctest: +SKIP
    (0.874, 0.912)
    >>> r["search_test"]["embedding_cosine"], r["refined_test"]["embedding_cosine"]
    ... # doctest: +SKIP
    (0.869, 0.905)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from paretoforge._io import atomic_write_json
from paretoforge._system import available_cores, pin_process, usable_cores
from paretoforge.exceptions import SpecError
from paretoforge.names import TrialAttr

__all__ = ["refine_front"]


def _setting_name(recovery: dict[str, Any]) -> str:
    return f"epochs{recovery['epochs']}-lr{recovery['lr']:g}"


def refine_front(run_dir: str | os.PathLike[str], *, epochs: int | None = None,
                 lr: float | None = None, trials: Sequence[int] | None = None,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Distil the run's pruned front members (or ``trials``) again with a larger budget.

    Args:
        run_dir: A finished run directory.
        epochs: Distillation epochs (default: 3x the search's ``recovery.epochs``).
        lr: Learning rate (default: the search's).
        trials: Which trials to refine (default: every member of the front). Unpruned members
            (the base, possibly quantized) have nothing to recover and are skipped.
        log: Where progress lines go.

    Returns:
        One row per refined member: ``trial``, ``config``, ``search`` (its metrics in the
        search, quality on validation), ``refined`` (the new metrics, validation),
        ``search_test`` and ``refined_test`` (quality on the test split, scored once after
        the rebuild), ``artifact_dir`` (the refined checkpoint), ``timings``; also written to
        ``<run>/refined/<setting>/refined.json``.

    Raises:
        SpecError: a trial is not a completed trial of the run, or the budget is not larger.
    """
    from paretoforge.manifest import read_manifest
    from paretoforge.orchestrator.results import load_run
    from paretoforge.orchestrator.worker import Worker
    from paretoforge.pipeline.final import describe_test_split, record_test_metrics, score_test
    from paretoforge.pipeline.prepare import prepare_cached
    from paretoforge.search_spaces import CandidateConfig
    from paretoforge.spec import Spec

    run = load_run(run_dir)
    spec = run.spec
    search_recovery = spec.recovery.model_dump(mode="json")
    recovery = dict(search_recovery, epochs=epochs if epochs is not None
                    else 3 * max(1, spec.recovery.epochs), lr=lr if lr is not None
                    else spec.recovery.lr)
    if recovery["epochs"] <= spec.recovery.epochs and recovery["lr"] == spec.recovery.lr:
        raise SpecError(
            f"refine: epochs={recovery['epochs']} is no larger a budget than the search's "
            f"({spec.recovery.epochs}); pass --epochs above {spec.recovery.epochs}"
        )
    if trials:
        done = {t.number: t for t in run.trials()}
        missing = [n for n in trials if n not in done]
        if missing:
            raise SpecError(f"refine: trial {missing[0]} is not a completed trial of "
                            f"{run.dir}; completed: {sorted(done)[:20]}")
        members = [(n, done[n].user_attrs[TrialAttr.CONFIG],
                    done[n].user_attrs[TrialAttr.METRICS]) for n in trials]
    else:
        members = [(m.trial, m.config, m.metrics) for m in run.front()]

    d = spec.model_dump(mode="json")
    d["recovery"] = recovery
    # One member at a time on this machine: the worker may use every core to train.
    d["cluster"]["cpus_per_worker"] = available_cores()
    rspec = Spec.from_dict(d)
    out_dir = run.dir / "refined" / _setting_name(recovery)
    prepared = prepare_cached(rspec, log=log)
    affinity = usable_cores()
    # the worker builds and scores on validation only: it never gets the test split
    worker = Worker(prepared.for_workers(), rspec.model_dump(mode="json"), str(out_dir), index=0)
    test_record = describe_test_split(prepared)
    scored = run.test_metrics()

    def test_of(directory: Any, known: dict[str, float] | None = None) -> dict[str, float]:
        if known:
            return known
        manifest = read_manifest(directory)
        if manifest is not None and manifest.test_metrics and \
                manifest.test_split.get("indices_sha256") == test_record["indices_sha256"]:
            return dict(manifest.test_metrics)
        metrics = score_test(prepared, directory, batch_size=test_record["batch_size"])
        record_test_metrics(directory, metrics, test_record)
        return metrics

    rows: list[dict[str, Any]] = []
    try:
        for number, config, metrics in members:
            cfg = CandidateConfig.model_validate(config)
            if cfg.is_unpruned(prepared.num_layers, prepared.num_heads):
                log(f"trial {number}: unpruned, nothing to recover; skipped")
                continue
            t0 = time.perf_counter()
            res = worker.evaluate(number, config)
            refined_dir = out_dir / res["artifact_dir"]
            # the test split, once each, after every choice is made
            search_test = test_of(run.artifact_dir(run.trial(number)), scored.get(number))
            refined_test = test_of(refined_dir)
            rows.append({"trial": number, "config": config, "search": metrics,
                         "refined": res["metrics"], "search_test": search_test,
                         "refined_test": refined_test, "artifact_dir": str(refined_dir),
                         "timings": res["timings"], "wall_s": time.perf_counter() - t0})
            q = prepared.task.metric
            log(f"trial {number}: {q} validation {metrics[q]:.4f} -> {res['metrics'][q]:.4f}, "
                f"test {search_test[q]:.4f} -> {refined_test[q]:.4f}")
            atomic_write_json(out_dir / "refined.json", {
                "run": str(run.dir), "search_recovery": search_recovery, "recovery": recovery,
                "metric": prepared.task.metric, "members": rows,
            })
    finally:
        pin_process(affinity)  # the worker pinned this process to its own cores
    return rows

