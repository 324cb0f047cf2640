"""The worker contract: what the driver asks of the class it makes a Ray actor per worker slot.

:class:`~paretoforge.orchestrator.worker.Worker` builds, scores and measures candidates;
:class:`paretoforge.testing.FakeWorker` makes their metrics up. Both take the constructor below
and answer the two methods, so ``run_search(worker_cls=...)`` runs either with the same code:
the driver has no branch for a particular worker class.

Example:
    >>> from paretoforge.orchestrator.protocol import CandidateWorker
    >>> sorted(m for m in ("ping", "evaluate") if hasattr(CandidateWorker, m))
    ['evaluate', 'ping']
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["CandidateWorker"]


class CandidateWorker(Protocol):
    """A worker the driver runs as one Ray actor per ``cluster.workers`` slot.

    The driver wraps the class as ``ray.remote(num_cpus=cluster.cpus_per_worker,
    max_restarts=0, max_task_retries=0)(worker_cls)``; the actor is synchronous, so it runs one
    method call at a time. A worker that dies (SIGKILL, out of memory, its node lost) or runs
    past ``search.trial_timeout_s`` is killed and replaced by a new actor, made with the same
    arguments except ``holder``; the trial it held is retried on another worker.
    """

    def __init__(self, prepared: Any, spec: dict[str, Any], run_dir: str, *, index: int = 0,
                 gates: dict[str, Any] | None = None, holder: str = "", pin: bool = True,
                 benches: dict[str, list[Any]] | None = None, keeper: Any = None) -> None:
        """Start one worker; called in the actor's process when its slot starts or restarts.

        It is called before any trial and may take long (imports, loading the base model);
        the slot counts as free only once :meth:`ping` answers. An exception here means the
        worker cannot start: the pool tries the slot again, gives it up after a few failures,
        and ends the search with :class:`~paretoforge.exceptions.PlacementError` when no slot
        is left.

        Args:
            prepared: What the driver computed once for every worker (base model, task data,
                importance; a :class:`~paretoforge.pipeline.prepare.Prepared`), put in
                Ray's object store once and shared; read it, never change it.
            spec: The search spec as JSON (``Spec.model_dump(mode="json")``);
                ``Spec.model_validate(spec)`` gives it back and registers its ``hardware``
                profiles in this process.
            run_dir: The driver's run directory (its working copy for a URI run). A worker that
                sees it (``keeper``) writes a candidate's artifact to
                ``<run_dir>/artifacts/<config key>/``, in a temporary ``.<key>.tmp-<pid>``
                directory renamed into place; one that does not builds in a scratch folder of
                its node and returns the artifact's bytes under ``runstore.PAYLOAD``.
            index: The slot's number, ``0 .. cluster.workers - 1``; a replacement keeps it.
            gates: Ray node id -> that node's :class:`~paretoforge.orchestrator.gate.CoreGate`
                actor: measurements take it exclusively, builds shared.
            holder: The id (unique per actor, never reused) under which this worker takes a
                gate; the pool releases a lost worker's holds by it.
            pin: Pin the process to its own cores (``cluster.cpus_per_worker`` of them, chosen
                by ``index``), so a build never runs on a core a neighbour measures on.
            benches: Profile name -> the measurement benches on the nodes that carry that
                profile's Ray resource (:class:`~paretoforge.orchestrator.bench.BenchRef`); a
                profile listed here is measured there, not on this worker's node. Empty when
                no profile is bound to a resource.
            keeper: The driver node's :class:`~paretoforge.orchestrator.runstore.RunKeeper`
                (where the run directory is, and its token; the run's base latencies); None
                outside a search (the worker then writes into ``run_dir``).
        """

    def ping(self) -> dict[str, Any]:
        """Where this worker runs; called once, right after the constructor, by the pool.

        Its answer marks the slot free. It must return at once and must hold ``"index"``,
        ``"node_id"`` (the Ray node id) and ``"pid"`` (this process's id: the driver names the
        worker by it in errors and removes a lost worker's ``.<key>.tmp-<pid>`` directories);
        other keys (pinned ``"cores"``, ...) go into the ``worker_ready`` progress event.
        """
        ...

    def evaluate(self, trial_number: int, config: dict[str, Any], *,
                 recovery_epochs: int | None = None,
                 resume: dict[str, Any] | None = None) -> dict[str, Any]:
        """Build, score and measure one candidate; called by the loop, once per attempt.

        ``recovery_epochs`` (a one-shot search's finishing trials): recover the candidate
        with that many distillation epochs instead of the search-time recovery; its artifact
        key is then ``<config key>-r<epochs>``. ``resume`` (a finishing rung after the first,
        with ``one_shot.finish_resume``): start from the weights of the previous rung's
        artifact ``resume["key"]``, which had ``resume["epochs"]`` epochs, and train the rest;
        ``resume["weights"]`` holds its ``model.safetensors`` bytes when the worker's ping
        said it does not see the run directory (``in_place`` false).

        ``config`` is a :class:`~paretoforge.search_spaces.CandidateConfig` as JSON. The same
        trial may reach a worker again (attempt 2, after its first worker was lost); the same
        config never reaches two workers at once (the loop waits for an in-flight twin).

        Returns:
            ``{"metrics": {name: float}, "artifact_dir": "artifacts/<key>", "timings":
            {"total_s": ..., ...}, "worker": index, "node_id": ...}``. ``metrics`` must hold
            every objective and constraint metric of the spec (a missing one fails the trial);
            the artifact directory, when the worker writes one, is complete when this returns.
            ``latency_p50_ms@PROFILE`` is the figure the study ranks by: the drift-free median
            (the candidate's latency relative to the run's reference, the base model's fp32
            artifact timed beside it round by round, times the run's one base latency on the
            profile), and ``latency_p50_abs_ms@PROFILE`` the absolute median beside it. A
            worker measures the reference itself (the real one builds it from ``prepared``
            into ``<run_dir>/reference/``); every worker of a run must scale by the same base
            latency, so the first one recorded in the run directory is used by all.

        Raises:
            BuildError: The candidate cannot be built (surgery, recovery, export, a precision
                step); the trial fails with kind ``build`` and the config is not built again.
            MeasurementError: A profile could not be measured; the trial fails with kind
                ``measurement``.
        """
        ...
