"""The worker: a Ray actor that builds and measures candidates on its own pinned core.

``Worker`` is a plain class; the driver makes it a Ray actor at the call site
(``ray.remote(num_cpus=1)(Worker)``), so its logic is tested without Ray too. It holds only
what is about Ray and the machine: which cores it is pinned to, its node's core gate, and which
node measures a profile (here, or a bench of a node that carries the profile's resource). The
build itself is :func:`paretoforge.pipeline.build_candidate`.

Every measurement times the candidate beside the run's reference, the base model's fp32
artifact (:func:`paretoforge.pipeline.stages.reference_artifact`, built once per run in
``<run_dir>/reference/``), round by round on the same core and inputs. The run's one base
latency per profile is the reference's median in the first measurement of that profile,
recorded in ``<run_dir>/reference/<base key>/latency@<profile>.json`` (the first worker to
write it wins, a resumed run reads it back; a decoder's decode step has its own,
``latency@<profile>.decode.json``); each candidate's ranked latency is its relative
latency times it (:func:`~paretoforge.evaluators.latency.with_base_latency`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import statistics
import tempfile
import traceback
from pathlib import Path
from typing import Any

from paretoforge._system import pin_process, set_yield_point, usable_cores
from paretoforge.exceptions import BuildError, MeasurementError, ParetoforgeError
from paretoforge.orchestrator.bench import BenchRef, current_node_id
from paretoforge.orchestrator.gate import GateClient, LocalGate
from paretoforge.pipeline import (
    BuildContext,
    Prepared,
    StageCache,
    artifact_path,
    build_candidate,
    result_from_manifest,
    verify_artifact,
)
from paretoforge.pipeline import stages as st
from paretoforge.search_spaces import CandidateConfig
from paretoforge.spec import Spec

__all__ = ["Worker"]


class Worker:
    """Builds and measures candidates; one per core (``index`` picks the core it is pinned to).

    Example:
        >>> w = Worker(prepared, spec.model_dump(mode="json"), "runs/x", index=0)  # doctest: +SKIP
        >>> w.evaluate(0, cfg.model_dump())  # doctest: +SKIP
    """

    def __init__(self, prepared: Prepared, spec: dict[str, Any], run_dir: str, *, index: int = 0,
                 gates: dict[str, Any] | None = None, holder: str = "", pin: bool = True,
                 benches: dict[str, list[BenchRef]] | None = None, keeper: Any = None) -> None:
        import torch

        from paretoforge.tasks import ensure_registered

        self.prepared = prepared
        ensure_registered(prepared.task_impl)  # a user's own task travels with the bundle
        self.spec = Spec.model_validate(spec)  # registers the spec's `hardware` profiles here
        self.run_dir = Path(run_dir)
        # Whether this worker writes into the driver's run directory (it sees it: same machine
        # or a shared filesystem) or builds in a scratch folder of its own node and sends each
        # artifact back to the driver (``keeper``: the driver node's RunKeeper; none: in place).
        self.keeper = keeper
        self.in_place = True
        if keeper is not None:
            import ray

            from paretoforge.orchestrator.runstore import sees_run_dir

            driver_dir, token = ray.get(keeper.probe.remote())
            self.in_place = sees_run_dir(driver_dir, token)
            if not self.in_place:
                self.run_dir = _scratch_dir()
        self.index = index
        self.node_id = current_node_id()
        # Profile name -> the benches on nodes that carry its resource (see bench.py); the
        # worker starts its round-robin over them at its own index, so workers spread out.
        self.benches = dict(benches or {})
        self._bench_turn = index
        self._benches_lost: set[str] = set()
        self._gates = dict(gates or {})
        self.all_cores = usable_cores()
        threads = max(1, int(self.spec.cluster.cpus_per_worker))
        if pin and len(self.all_cores) > 1:
            # One core per worker: builds never spread over the core a neighbour measures on.
            start = (index * threads) % len(self.all_cores)
            n = len(self.all_cores)
            self.cores = [self.all_cores[(start + i) % n] for i in range(threads)]
            pin_process(self.cores)
        else:
            self.cores = list(self.all_cores)
        torch.set_num_threads(threads)
        handle = self._gates.get(self.node_id)
        # The node's gate, where anything on it may hold the cores exclusively; where nothing
        # can, every hold is shared and a local gate does: no round trips to the gate actor
        # (four a trial, about 20 ms of a one-shot trial's 0.2 s).
        self.gate: Any = (GateClient(handle, holder)
                          if handle is not None and self._node_has_writers() else LocalGate())
        self.context = self._context(prepared)
        self.cache = StageCache()
        self._reference: Path | None = None  # the base's artifact, built on first measurement
        self._reference_files: Any = None  # its files in Ray's object store, for benches
        self._base_latency: dict[str, float] = {}
        # Screening measurements' reference sessions, kept from trial to trial: (profile, cores)
        self._screen_refs: dict[tuple[str, tuple[int, ...]], Any] = {}
        # Screening measurements' placement reports, by graph structure, profile and cores
        self._placements: dict[tuple[str, str, int], dict[str, Any]] = {}
        # The session a screened candidate was scored with, timed next: (graph, profile, it)
        self._quality_runtime: tuple[Path, str, Any] | None = None
        # A build yields its shared hold at each distillation step when a measurement waits.
        set_yield_point(self.gate.yield_to_writers)

    def _node_has_writers(self) -> bool:
        """Whether anything may hold this node's gate exclusively: a bench on this node, or a
        profile this worker measures here on more cores than its own (every worker of a node
        decides alike: the same benches, profiles and core count). Otherwise each build and
        each measurement on the node runs on its own worker's cores beside the others."""
        from paretoforge.hw_profiles import get_profile

        if any(ref.node_id == self.node_id for refs in self.benches.values() for ref in refs):
            return True
        return any(self._where(get_profile(name)) == "all cores"
                   for name in self.spec.measured_profiles)

    def _where(self, profile: Any) -> str:
        """Where this worker measures ``profile``: ``"bench"`` (a bench of a node that carries
        its resource: a GPU profile always, a CPU one when this node lacks the resource),
        ``"own cores"`` (its ``intra_op_threads`` fit on this worker's cores: the gate held
        shared) or ``"all cores"`` (the node's gate held exclusively)."""
        if profile.resource and self.benches.get(profile.name) and (
                profile.on_gpu or not _node_carries(self.node_id, profile.resource)):
            return "bench"
        if profile.intra_op_threads is not None and profile.intra_op_threads <= len(self.cores):
            return "own cores"
        return "all cores"

    def _context(self, prepared: Prepared) -> BuildContext:
        recovery = self.spec.recovery
        if getattr(prepared, "supernet", None) is not None:
            # One-shot: a sub-network is scored as cut from the supernet; finishing trials
            # ask for their recovery explicitly (evaluate's recovery_epochs).
            recovery = recovery.model_copy(update={"epochs": 0})
        return BuildContext(prepared, recovery=recovery, seed=self.spec.search.seed)

    # -- public verbs ------------------------------------------------------------------------

    def warm(self) -> dict[str, Any]:
        """Do a first trial's one-time work now: the modules a build imports, the base model,
        the run's reference artifact, an ONNX Runtime session on it, and the node's
        calibration (:func:`~paretoforge._sysinfo.machine_identity`, which every measurement
        records; once per node, cached). The driver calls it on
        workers it starts while the supernet trains, so their first trial costs what the
        others do. A failure is returned, not raised: the first trial meets it again and
        reports it as that trial's.

        Returns:
            ``{"seconds": ...}``, plus ``"error"`` when a step failed.
        """
        import time

        t0 = time.perf_counter()
        out: dict[str, Any] = {}
        try:
            import onnxruntime as ort
            import onnxruntime.quantization  # noqa: F401  (the int8 passes)

            self.context.base  # noqa: B018  (loads it)
            ref = self.reference()
            samples, _ = st.latency_samples(self.context)
            sess = ort.InferenceSession(str(ref / "model.onnx"),
                                        providers=["CPUExecutionProvider"])
            sess.run(None, {k: v[:1] for k, v in samples.items()})
            from paretoforge._sysinfo import machine_identity

            machine_identity()
        except Exception as e:  # noqa: BLE001  (the first trial raises it as its own)
            out["error"] = f"{type(e).__name__}: {e}"
        out["seconds"] = time.perf_counter() - t0
        return out

    def close(self) -> None:
        """Remove this worker's stage cache (its exports in the temporary directory); the
        pool calls it before it stops the worker."""
        self.cache.clear()
        for rt in self._screen_refs.values():
            rt.close()
        self._screen_refs.clear()

    def attach_supernet(self, supernet: dict[str, Any]) -> None:
        """Take the trained supernet (``Prepared.supernet``) of a one-shot search this worker
        was started before: candidates are cut from it from now on, and scored as cut. The
        base model and the reference already loaded are kept."""
        import dataclasses

        loaded = self.context
        self.prepared = dataclasses.replace(self.prepared, supernet=supernet)
        self.context = self._context(self.prepared)
        self.context.share_loaded(loaded)
        self.context.source  # noqa: B018  (cut from at the first trial: load it now)

    def ping(self) -> dict[str, Any]:
        """Where this worker runs: index, Ray node, pinned cores, process id, and whether it
        sees the run directory (``in_place``)."""
        return {"index": self.index, "node_id": self.node_id, "cores": self.cores,
                "pid": os.getpid(), "in_place": self.in_place}

    def evaluate(self, trial_number: int, config: dict[str, Any], *,
                 recovery_epochs: int | None = None,
                 resume: dict[str, Any] | None = None) -> dict[str, Any]:
        """Build, score and measure one candidate; return its metrics and artifact location.

        ``recovery_epochs``: a finishing trial's distillation budget (its artifact key gets
        ``-r<epochs>``); None: the search-time recovery. ``resume``: the finishing trial
        continues the weights of its previous rung's artifact (``{"key", "epochs"}``, plus
        ``"weights"``, the bytes of its ``model.safetensors``, when this worker does not see
        the run directory) for the epochs still missing.

        Raises:
            BuildError: surgery, recovery, export or quantization failed (reason in message).
            MeasurementError: a profile could not be measured.
        """
        cfg = CandidateConfig.model_validate(config)
        key = cfg.key if recovery_epochs is None else f"{cfg.key}-r{int(recovery_epochs)}"
        manifest = verify_artifact(artifact_path(self.run_dir, key), key=key)
        if manifest is not None:  # built already (a retried trial whose worker died after it)
            return self._result(manifest, reused=True)
        start = None
        if resume is not None:
            from paretoforge.models.io import WEIGHTS_NAME
            from paretoforge.pipeline.stages import Resume

            weights = resume.get("weights")
            if weights is None:
                path = artifact_path(self.run_dir, resume["key"]) / WEIGHTS_NAME
                try:
                    weights = path.read_bytes()
                except OSError as e:
                    raise BuildError(f"candidate {cfg.key}: cannot read the weights it "
                                     f"continues from ({path}): {e}") from e
            start = Resume(key=str(resume["key"]), epochs=int(resume["epochs"]), weights=weights)
        context = (self.context if recovery_epochs is None
                   else self.context.with_recovery_epochs(int(recovery_epochs), resume=start))
        screening = self._screening(cfg, recovery_epochs)
        measurer = functools.partial(self._measure, settings=screening,
                                     keep_reference=screening is not None)
        try:
            self.reference()  # built once, before the first build's clock starts
            manifest = build_candidate(
                context, cfg, run_dir=self.run_dir, artifact_key=key,
                profiles=list(self.spec.measured_profiles), measurer=measurer,
                building=self.gate.shared, cache=self.cache,
                built_on={"node_id": self.node_id, "host": socket.gethostname(),
                          "worker": self.index, "cores": self.cores},
                quality_session=self._quality_session if screening is not None else None)
        except ParetoforgeError:
            raise
        except Exception as e:  # an unexpected failure is still this candidate's build failure
            tb = traceback.format_exc(limit=4)
            raise BuildError(f"candidate {cfg.key} failed: {type(e).__name__}: {e}\n{tb}") from e
        finally:
            self._drop_quality_runtime()
        return self._result(manifest, reused=False)

    def retime(self, members: list[dict[str, Any]], *, rounds: int,
               seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
        """Time the finished front again, every member beside the base, in interleaved rounds.

        Each of ``rounds`` rounds visits the members in a fresh shuffled order, and each visit
        is one round of the profile's protocol against the run's reference (fresh sessions of
        both, warm-up, alternating timed calls, the same samples). So a member's rounds are
        spread over the whole stage, minutes of machine state apart on a large front, instead
        of the back-to-back rounds of its search measurement, which share one machine state
        and agree with each other more than with a later re-measurement.

        Args:
            members: ``{"trial", "key", "precision"}`` each, plus ``"files"`` (name -> bytes)
                when this worker does not see the run directory.
            rounds: Interleaved rounds (at least 1).
            seed: Seed of the shuffles.

        Returns:
            Trial (as a string) -> profile -> the record: ``rel_rounds`` (a ratio to the base
            per round), ``rel_p50`` (their median), ``rel_low`` / ``rel_high`` (their range),
            ``round_p50_ms`` / ``ref_round_p50_ms``, ``rounds``, ``base_p50_ms`` and
            ``drift_free_p50_ms`` (``rel_p50`` times the run's base latency), ``wall_s``.
        """
        import inspect
        import random
        import time

        from paretoforge.evaluators.latency import measure_latency

        if rounds < 1:
            raise ParetoforgeError(f"retime: rounds must be >= 1, got {rounds}")
        from paretoforge.hw_profiles import get_profile

        samples, _ = st.latency_samples(self.context)
        profiles = [get_profile(n) for n in self.spec.measured_profiles]
        # One round of the profile's full protocol: its share of measure_latency's budget.
        budget = inspect.signature(measure_latency).parameters["max_seconds"].default
        per_round = {p.name: budget / p.latency_max_rounds for p in profiles}
        t0 = time.perf_counter()
        got: dict[str, dict[str, list[dict[str, Any]]]] = {
            str(m["trial"]): {p.name: [] for p in profiles} for m in members}
        with tempfile.TemporaryDirectory(prefix="pf-retime-") as scratch:
            paths: dict[str, Path] = {}
            for m in members:
                if m.get("files"):
                    d = Path(scratch) / str(m["trial"])
                    d.mkdir()
                    for name, data in m["files"].items():
                        if Path(name).name != name:
                            raise ParetoforgeError(f"retime: bad artifact file name {name!r}")
                        (d / name).write_bytes(data)
                    paths[str(m["trial"])] = d / "model.onnx"
                else:
                    paths[str(m["trial"])] = artifact_path(self.run_dir, m["key"]) / "model.onnx"
            precision = {str(m["trial"]): m.get("precision", "fp32") for m in members}
            order = list(paths)
            rng = random.Random(seed)
            for _ in range(rounds):
                rng.shuffle(order)
                for t in order:
                    for p in profiles:
                        rec = self._measure(paths[t], p.name, samples, precision=precision[t],
                                            settings={"rounds": 1, "max_rounds": 1,
                                                      "max_seconds": per_round[p.name]})
                        got[t][p.name].append(rec)
        wall = time.perf_counter() - t0
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for t, by_profile in got.items():
            out[t] = {}
            for name, recs in by_profile.items():
                rel = [r["rel_p50"] for r in recs if r.get("rel_p50") is not None]
                rec: dict[str, Any] = {
                    "rounds": len(recs), "wall_s": round(wall, 3),
                    "round_p50_ms": [float(r["p50_ms"]) for r in recs],
                    "ref_round_p50_ms": [float(r["ref_p50_ms"]) for r in recs
                                         if r.get("ref_p50_ms") is not None],
                    "p50_ms": float(statistics.median([float(r["p50_ms"]) for r in recs])),
                    "env": recs[0].get("env", {}),
                }
                if rel:
                    rec.update(rel_rounds=rel, rel_p50=float(statistics.median(rel)),
                               rel_low=min(rel), rel_high=max(rel),
                               base_p50_ms=recs[0].get("base_p50_ms"))
                    if rec["base_p50_ms"] is not None:
                        rec["drift_free_p50_ms"] = rec["rel_p50"] * float(rec["base_p50_ms"])
                out[t][name] = rec
        return out

    def _screening(self, cfg: CandidateConfig, recovery_epochs: int | None
                   ) -> dict[str, Any] | None:
        """The screening measurement settings of a one-shot trial, or None (the profile's full
        protocol). A sub-network as cut from the supernet only ranks the one-shot search. A
        finishing trial's graph is its one-shot trial's with other weights: its latency
        ranks the rungs and decides the front's membership, and when the front is re-timed
        (``search.retime_rounds``, the figures it quotes) it is screened as well; without a
        re-time it is measured in full. Unpruned candidates are always measured in full."""
        prepared = self.context.prepared
        if (getattr(prepared, "supernet", None) is None
                or (recovery_epochs is not None and not self.spec.search.retime_rounds)
                or cfg.is_unpruned(prepared.num_layers, prepared.num_heads)):
            return None
        one_shot = self.spec.one_shot
        return {"rounds": one_shot.screen_rounds, "max_rounds": one_shot.screen_rounds,
                "max_seconds": one_shot.screen_seconds, "min_runs": one_shot.screen_calls}

    def _quality_session(self, onnx_path: Path) -> Any:
        """A screened candidate's session, opened once for its scoring and its timing: the
        first measured profile that this worker times here, on its own cores, in a session
        whose results are the quality scoring's (ONNX Runtime's CPU provider, one thread,
        every graph optimization: :func:`~paretoforge.evaluators.quality.onnx_logits`).
        None when no profile is such (the scoring opens its own). Opening a session was a
        tenth of a one-shot trial, and a screening measurement times one session anyway."""
        from paretoforge.hw_profiles import get_profile
        from paretoforge.kernels.runtime import load_runtime

        self._drop_quality_runtime()
        n = len(self.cores)
        for name in self.spec.measured_profiles:
            p = get_profile(name)
            if (p.runtime != "onnxruntime" or p.device != "cpu" or p.cuda_graph
                    or p.provider != "CPUExecutionProvider" or p.graph_optimization != "all"
                    or p.threads_for(n) != 1 or self._where(p) != "own cores"):
                continue
            runtime = load_runtime(onnx_path, p, n_cores=n)
            self._quality_runtime = (Path(onnx_path), p.name, runtime)
            return runtime.session
        return None

    def _drop_quality_runtime(self) -> None:
        if self._quality_runtime is not None:
            _, _, runtime = self._quality_runtime
            self._quality_runtime = None
            runtime.close()

    def _result(self, manifest: Any, *, reused: bool) -> dict[str, Any]:
        """The result of a build; from a scratch folder, with the artifact's bytes (they travel
        through Ray's object store; the driver checks them before it commits them)."""
        res = result_from_manifest(manifest, reused=reused)
        if not self.in_place:
            from paretoforge.orchestrator.runstore import PAYLOAD

            d = artifact_path(self.run_dir, manifest.key)
            res[PAYLOAD] = {"manifest": (d / "manifest.json").read_bytes(),
                            "files": {n: (d / n).read_bytes() for n in manifest.files}}
            shutil.rmtree(d, ignore_errors=True)  # the driver's copy is the run's
        return res

    # -- where a profile is measured ----------------------------------------------------------

    def _measure(self, onnx_path: Path, profile_name: str, inputs: dict[str, Any], *,
                 precision: str = "fp32", settings: dict[str, Any] | None = None,
                 decode_past: int | None = None, keep_reference: bool = False
                 ) -> dict[str, Any]:
        """Measure ``profile_name`` here, or on a bench of a node that carries its resource,
        beside the run's reference; the record carries the drift-free median.

        Here: profiles any node serves, and resource-bound CPU profiles when this worker's node
        carries the resource. A GPU profile always goes to its bench: the worker asked Ray for
        no GPU, so Ray hides the devices from it. The node's gate is held (shared on the
        worker's own cores, exclusive for more) around the timed calls only. ``settings``
        (a screening measurement's rounds and time budget) override the profile's protocol;
        the record's ``fidelity`` says which one it followed; ``keep_reference`` (a
        screening measurement's) times the candidate beside this worker's kept reference
        session instead of a fresh one (:meth:`_screen_reference`), and reuses the placement
        report of a graph of the same structure measured before on this worker.
        ``decode_past``: a decoder's
        decode step after that many cached tokens, whose base latency is the run's own
        (``latency@<profile>.decode.json``).
        """
        from paretoforge.hw_profiles import get_profile
        from paretoforge.orchestrator.bench import measure_profile

        profile = get_profile(profile_name)
        reference = self.reference()
        where = self._where(profile)
        if where == "bench":
            rec = self._measure_on_bench(onnx_path, profile, inputs, precision, settings,
                                         decode_past)
        else:
            self._check_node_serves(profile)
            if where == "own cores":
                # Fits on this worker's own cores: the neighbours build on theirs meanwhile;
                # the shared hold keeps exclusive measurements (all-core profiles, benches)
                # off the node.
                ref = (self._screen_reference(profile, self.cores)
                       if keep_reference and decode_past is None else reference)
                kept = self._quality_runtime
                runtime = (kept[2] if kept is not None and keep_reference and decode_past is None
                           and kept[0] == Path(onnx_path) and kept[1] == profile.name else None)
                rec = measure_profile(onnx_path, profile, inputs, cores=self.cores,
                                      node_id=self.node_id, precision=precision,
                                      reference=ref, hold=self.gate.shared,
                                      settings=settings, decode_past=decode_past,
                                      placements=self._placements if keep_reference else None,
                                      runtime=runtime)
            else:
                # Needs more cores than this worker owns: every build on the node yields
                # while the timed calls run.
                rec = measure_profile(onnx_path, profile, inputs, cores=self.all_cores,
                                      node_id=self.node_id, precision=precision,
                                      reference=reference, hold=self.gate.exclusive,
                                      settings=settings, decode_past=decode_past)
        rec["fidelity"] = "full" if settings is None else "screening"
        return self._with_base_latency(profile.name, rec,
                                       kind="latency" if decode_past is None else "decode")

    def _screen_reference(self, profile: Any, cores: list[int]) -> Any:
        """The reference's session for screening measurements of ``profile`` on ``cores``,
        made once (pinned as the measurement pins) and reused: a screening measurement
        only ranks the search, and a fresh reference session a trial was a tenth of a tiny
        candidate's build. The profile's full protocol (unpruned candidates, the front's
        re-time) keeps fresh sessions of both each round. Torch profiles: the path (fresh)."""
        if profile.runtime != "onnxruntime":
            return self.reference()
        key = (profile.name, tuple(cores))
        if key not in self._screen_refs:
            from paretoforge._system import pinned
            from paretoforge.kernels.runtime import load_runtime

            with pinned(cores):
                self._screen_refs[key] = load_runtime(self.reference(), profile,
                                                      n_cores=len(cores))
        return self._screen_refs[key]

    def reference(self) -> Path:
        """The run's reference artifact (the base, fp32), built on first use."""
        if self._reference is None:
            with self.gate.shared():  # a build like any other
                self._reference = st.reference_artifact(self.context, self.run_dir)
        return self._reference

    def _with_base_latency(self, profile: str, rec: dict[str, Any], *,
                           kind: str = "latency") -> dict[str, Any]:
        """``rec`` with the run's base latency on ``profile`` and the drift-free median
        (``kind``: ``latency``, a call on the samples; ``decode``, a decoder's decode step)."""
        from paretoforge.evaluators.latency import with_base_latency

        if rec.get("ref_p50_ms") is None:
            return rec
        # latency@cpu-1t.json, latency@cpu-1t.decode.json (a remote run store uploads both)
        name = f"latency@{profile}" if kind == "latency" else f"latency@{profile}.{kind}"
        base = self._base_latency.get(name)
        if base is None and not self.in_place:  # recorded in the driver's run directory
            import ray

            rel = (self.reference() / f"{name}.json").relative_to(self.run_dir)
            base = float(ray.get(self.keeper.base_latency.remote(
                rel.as_posix(), float(rec["ref_p50_ms"]),
                {"measured_by": self.index, "node_id": self.node_id})))
            self._base_latency[name] = base
        if base is None:
            base = _run_base_latency(self.reference() / f"{name}.json",
                                     float(rec["ref_p50_ms"]), {"measured_by": self.index})
            self._base_latency[name] = base
        return with_base_latency(rec, base)

    def _measure_on_bench(self, onnx_path: Path, profile: Any, inputs: dict[str, Any],
                          precision: str = "fp32", settings: dict[str, Any] | None = None,
                          decode_past: int | None = None) -> dict[str, Any]:
        """Send the artifact files and the samples to a bench of ``profile``; wait for the result.

        Benches are taken in turn; a lost one (its node left, its process died) is skipped from
        then on, its gate holds released, and the next one measures. The worker holds no gate
        while it waits, so a bench on this worker's node can take the node's gate.

        Raises:
            MeasurementError: the bench failed to measure, or every bench of the profile is lost.
        """
        import ray
        from ray.exceptions import RayTaskError

        from paretoforge.orchestrator.pool import is_worker_lost

        benches = [b for b in self.benches[profile.name] if b.holder not in self._benches_lost]
        if benches:
            turn = self._bench_turn % len(benches)
            self._bench_turn += 1
            benches = benches[turn:] + benches[:turn]
        # ONNX Runtime profiles need the graph; torch profiles load the PyTorch model instead.
        names = (("model.onnx",) if profile.runtime == "onnxruntime"
                 else ("model.onnx", "config.json", "model.safetensors"))
        files = {n: (onnx_path.parent / n).read_bytes() for n in names}
        if self._reference_files is None:  # once: every bench call passes the same object
            ref = self.reference()
            self._reference_files = ray.put({n: (ref / n).read_bytes() for n in
                                             ("model.onnx", "config.json", "model.safetensors")})
        lost = []
        for b in benches:
            try:
                return dict(ray.get(b.handle.measure.remote(files, profile.name, inputs,
                                                               precision,
                                                               self._reference_files,
                                                               settings, decode_past)))
            except RayTaskError as e:  # the bench ran, and the measurement itself failed
                cause = e.cause if isinstance(e.cause, BaseException) else e
                kind = type(cause) if isinstance(cause, ParetoforgeError) else MeasurementError
                raise kind(f"profile {profile.name!r} on the bench of node {b.node_id[:12]}: "
                           f"{type(cause).__name__}: {cause}") from None
            except Exception as e:
                if not is_worker_lost(e):
                    raise
                self._benches_lost.add(b.holder)
                gate = self._gates.get(b.node_id)
                if gate is not None:  # a bench killed mid-measurement must not block its node
                    try:
                        gate.release_holder.remote(b.holder)
                    except Exception:  # the node (and its gate) is gone too
                        pass
                lost.append(f"node {b.node_id[:12]} ({type(e).__name__})")
        raise MeasurementError(
            f"profile {profile.name!r}: no bench is left to measure it"
            f"{' (lost: ' + ', '.join(lost) + ')' if lost else ''}; every node with Ray resource "
            f"{profile.resource!r} left the cluster or its bench process died. Restart the "
            "search (`paretoforge resume`) once such a node is back"
        )

    def _check_node_serves(self, profile: Any) -> None:
        """A profile bound to a Ray resource is never measured silently on another node."""
        if not profile.resource or _node_carries(self.node_id, profile.resource):
            return
        raise MeasurementError(
            f"profile {profile.name!r} needs Ray resource {profile.resource!r}, which this "
            f"worker's node {self.node_id[:12]} does not carry, and the worker was given no "
            "bench for it; it is not measured elsewhere (the driver starts a bench on every "
            "node that carries the resource)"
        )


def _run_base_latency(path: Path, measured_ms: float, extra: dict[str, Any]) -> float:
    """The run's base latency at ``path``: the one recorded there, or ``measured_ms``, which
    becomes it when no worker recorded one before (an exclusive link: the first one wins)."""
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"ref_p50_ms": measured_ms, **extra}))
        try:
            os.link(tmp, path)  # fails when another worker recorded it first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return float(json.loads(path.read_text())["ref_p50_ms"])


def _scratch_dir() -> Path:
    """This worker's scratch folder on its own node (``$TMPDIR/paretoforge-scratch/<pid>``);
    the folders of workers that are gone are removed."""
    root = Path(tempfile.gettempdir()) / "paretoforge-scratch"
    root.mkdir(parents=True, exist_ok=True)
    for d in root.iterdir():
        if d.name.isdigit() and not _alive(int(d.name)):
            shutil.rmtree(d, ignore_errors=True)
    mine = root / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _node_carries(node_id: str, resource: str) -> bool:
    """Whether Ray node ``node_id`` carries ``resource`` (False outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            for node in ray.nodes():
                if node.get("NodeID") == node_id:
                    return float(node.get("Resources", {}).get(resource, 0)) > 0
    except Exception:  # no Ray: no resources
        pass
    return False
