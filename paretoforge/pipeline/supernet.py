"""Train the one-shot supernet of a prepared base, data-parallel on Ray Train, cached by content.

:func:`train_supernet` runs :class:`~paretoforge.models.supernet.SupernetTrainer` on Ray
Train's ``TorchTrainer`` (gloo on CPU, NCCL with CUDA): each worker trains on its shard of the
task's training split and the gradients are averaged over the process group Ray Train sets up.
Every epoch ends in a checkpoint (the supernet as safetensors with its JSON sidecar, and the
optimizer state) reported to Ray Train, so that:

* a worker that dies (a SIGKILL, a lost node) costs at most the epoch it was in: the worker
  group restarts from the last checkpoint, up to ``max_failures`` times;
* a call after an interrupted run (a killed driver) finds that run under
  ``storage_dir/<key>`` and resumes from its last epoch;
* a call for a supernet already trained returns its directory at once:
  ``cache_dir()/supernets/<key>``, named by :func:`~paretoforge.models.supernet.supernet_key`
  of the base weights, the training data and the recipe.

This is the one module of the pipeline that talks to Ray (Ray Train is the trainer).

Example:
    >>> from paretoforge.models.supernet import Supernet, SupernetOptions
    >>> path = train_supernet(prepared, SupernetOptions(epochs=4), workers=2)  # doctest: +SKIP
    >>> sn = Supernet.load(path)  # doctest: +SKIP
    >>> candidate = sn.cut(sn.space.smallest())  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from paretoforge._io import atomic_write_json
from paretoforge.exceptions import BuildError
from paretoforge.pipeline.prepare import Prepared, cache_dir

__all__ = ["PROGRESS_DIR_SUFFIX", "supernet_cache_key", "train_supernet"]

#: ``storage_dir/<key>.progress/``: each worker's ``rank<r>.json`` (pid, epoch) and an
#: append-only ``events.jsonl`` (worker starts, epochs begun and ended), for monitoring.
PROGRESS_DIR_SUFFIX = ".progress"
_TRAINER_FILES = ("trainer_state.safetensors", "trainer_state.json")
_EPOCH_PREFIX = "epoch_"  # checkpoint directories: epoch_0001 holds the state after 1 epoch


def _epochs_in(directory: Path) -> int:
    """Epochs done in a complete checkpoint directory, or -1 if it is not one (yet)."""
    from paretoforge.models.supernet import SIDECAR_NAME

    try:
        meta = json.loads((directory / SIDECAR_NAME).read_text(encoding="utf-8"))
        state = json.loads((directory / _TRAINER_FILES[1]).read_text(encoding="utf-8"))
        sizes = [(directory / n).stat().st_size for n in ("model.safetensors", _TRAINER_FILES[0])]
    except (OSError, ValueError):
        return -1
    done = int(meta.get("epochs_done", -1))
    return done if done == int(state.get("epochs_done", -2)) and min(sizes) > 8 else -1


def _latest_checkpoint(checkpoint: Any, run_dir: Path) -> Path | None:
    """A local copy of the newest complete checkpoint: Ray Train's own (``get_checkpoint``),
    or a newer one already written to ``run_dir`` whose report Ray Train had not registered
    when the run was interrupted (a worker killed right after an epoch's report)."""
    best: tuple[int, Path | None] = (-1, None)
    local = None
    if checkpoint is not None:
        local = Path(checkpoint.to_directory(tempfile.mkdtemp(prefix="pf-supernet-ckpt-")))
        best = (_epochs_in(local), local)
    for d in sorted(run_dir.glob(f"{_EPOCH_PREFIX}*")) if run_dir.is_dir() else []:
        done = _epochs_in(d)
        if done > best[0]:
            best = (done, d)
    if best[1] is None or best[0] < 0:
        return None
    if best[1] is not local:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
        copy = Path(tempfile.mkdtemp(prefix="pf-supernet-ckpt-"))
        shutil.copytree(best[1], copy, dirs_exist_ok=True)
        return copy
    return local


def _distill_options(prepared: Prepared, options: Any) -> dict[str, Any]:
    """The task's loss options (labels, pooling, pooled weight) for the supernet's recipe."""
    return dict(prepared.task_impl.distill_options(prepared.task, prepared.task_state, options))


def supernet_cache_key(prepared: Prepared, options: Any, workers: int) -> str:
    """The content key of the supernet :func:`train_supernet` trains for these inputs.

    It covers the base weights (``prepared.base_key``), the training split and its labels,
    the importance the heads are ordered by, the options, the task's loss options and the
    number of workers (the data shards and per-worker batches depend on it; 0, this process,
    counts as 1).
    """
    from paretoforge.models.supernet import data_fingerprint, supernet_key

    losses = _distill_options(prepared, options)
    labels = losses.pop("labels", None)
    recipe = {
        "options": options.to_dict(),
        "task": prepared.task.name,
        "losses": {k: repr(v) for k, v in sorted(losses.items())},
        # the rewiring depends on the importance's orders only, and its values differ in
        # the last bits from run to run (reduction order): the key hashes the orders
        "importance": hashlib.sha256(json.dumps(
            _orders(prepared.importance), sort_keys=True).encode()).hexdigest()[:16],
        # this process (0, Ray Train's local mode) trains as one worker does: world size 1
        "workers": max(int(workers), 1),
    }
    return supernet_key(prepared.base_key, data_fingerprint(prepared.feeds("train"), labels),
                        recipe)  # fmt: skip


def _orders(x: Any) -> Any:
    """``x`` (importance scores: nested dicts and lists) with every list of numbers replaced
    by its order, most important first (stable), rounded to 6 significant digits first so
    that ties broken by noise do not change it.

    Example:
        >>> _orders({"heads": [[0.5, 0.9, 0.1]], "layers": [0.2, 0.2000000001]})
        {'heads': [[1, 0, 2]], 'layers': [0, 1]}
    """
    if isinstance(x, dict):
        return {str(k): _orders(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
            rounded = [float(f"{float(v):.6g}") for v in x]
            return sorted(range(len(x)), key=lambda i: -rounded[i])
        return [_orders(v) for v in x]
    return x


def _state_api_available() -> bool:
    """Whether Ray's State API answers (it needs the dashboard, off by default here).

    The dashboard's address is read from the GCS and its port tried once. Asking the State API
    itself on a cluster whose dashboard does not serve took 40 s here (its client retries
    the GCS for 40 s before it gives up).
    """
    import socket

    try:
        import ray.experimental.internal_kv as kv
        from ray._private import ray_constants

        raw = kv._internal_kv_get(ray_constants.DASHBOARD_ADDRESS,
                                  namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
        if raw is None:
            return False  # no dashboard registered
        host, _, port = raw.decode().rpartition(":")
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except Exception:  # not registered, not listening, or another Ray version
        return False
    try:
        from ray.util.state import list_actors

        list_actors(address=f"http://{host}:{port}", limit=1, timeout=2,
                    raise_on_missing_output=False)
        return True
    except Exception:  # the dashboard is there, its State API is not
        return False


def _started_here() -> bool:
    """Whether this process started the Ray cluster it is connected to (a local cluster of
    its own, which has no autoscaler), as opposed to joining one."""
    try:
        from ray._private import worker as ray_worker

        node = ray_worker._global_node
        return bool(node is not None and node.head)
    except Exception:  # Ray's internals moved: assume a cluster we joined
        return False


def _trainer_class(*, dashboard: bool, autoscaler: bool = True) -> Any:
    """``TorchTrainer`` without the default callbacks this trainer has no use for.

    Always without Ray Train's datasets callback: the supernet's data travels in the
    prepared bundle, not as Ray Datasets, and the callback starts a dataset-manager actor
    anyway (a process that imports Ray Data: 2 s of CPU on a 2-core machine, while the
    workers start). Where the cluster's State API does not answer (``dashboard`` False: no
    dashboard, the local cluster's default), also without

    * the placement-group cleaner, which watches the controller through the State API:
      every check waits out its 10 s timeout, it can never see the controller die (so it
      cleans nothing), and stopping it at the end of ``fit`` waits 12 s more, a third of a
      small supernet's whole training;
    * the controller's and workers' metrics callbacks, whose metrics only a dashboard shows.

    Where the cluster has no autoscaler (``autoscaler`` False: a local cluster this process
    started), a fixed-size run also registers no resource request with Ray's autoscaling
    coordinator, an actor whose process the controller waits for before it starts the
    workers, with nothing to scale (1.5 s of CPU on a 2-core machine, on the start's
    critical path).

    Where the hooks are not found (another Ray version), the stock trainer.
    """
    from ray.train.torch import TorchTrainer

    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.metrics import (
            ControllerMetricsCallback,
            WorkerMetricsCallback,
        )
        from ray.train.v2._internal.callbacks.placement_group_callback import (
            PlacementGroupCleanerCallback,
        )
    except ImportError:
        return TorchTrainer
    if not hasattr(TorchTrainer, "_create_default_callbacks"):
        return TorchTrainer
    unused: tuple[type, ...] = (DatasetsCallback,) if dashboard else (
        DatasetsCallback, PlacementGroupCleanerCallback, ControllerMetricsCallback,
        WorkerMetricsCallback)

    fixed = None if autoscaler else _fixed_policy_without_autoscaler()

    class _Trainer(TorchTrainer):  # type: ignore[misc, valid-type]
        def _create_default_callbacks(self) -> list[Any]:
            return [c for c in super()._create_default_callbacks()
                    if not isinstance(c, unused)]

        def _initialize_and_run_controller(self, **kwargs: Any) -> Any:
            policy = kwargs.get("scaling_policy")
            if fixed is not None and type(policy) is fixed.__base__:
                kwargs["scaling_policy"] = fixed(scaling_config=policy.scaling_config)
            return super()._initialize_and_run_controller(**kwargs)

    return _Trainer


def _fixed_policy_without_autoscaler() -> type | None:
    """Ray Train's fixed scaling policy without its autoscaling-coordinator requests, or None
    where this Ray version has no such policy (or names its hooks differently)."""
    try:
        from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy
    except ImportError:
        return None
    if not all(hasattr(FixedScalingPolicy, n) for n in (
            "after_controller_start", "_maybe_send_resource_request")):
        return None

    class _Fixed(FixedScalingPolicy):  # type: ignore[misc, valid-type]
        def after_controller_start(self, train_run_context: Any) -> None:
            pass  # no coordinator client: nothing to request, nothing to cancel

        def _maybe_send_resource_request(self) -> None:
            pass

    return _Fixed


def _log_event(progress: Path, event: dict[str, Any]) -> None:
    with open(progress / "events.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({**event, "time": round(time.time(), 3)}) + "\n")


def _all_reduce_mean(device: Any, world_size: int) -> Any:
    """Average tensors over the Ray Train process group, in place (one call per dtype)."""
    import torch
    import torch.distributed as dist

    def reduce(tensors: list[torch.Tensor]) -> None:
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group]).to(device)  # (sum of numels,)
            dist.all_reduce(flat)
            flat /= world_size
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    return reduce


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: build (or restore) the supernet, train its epochs, report each."""
    import ray
    import ray.train
    import torch

    from paretoforge.models.importance import Importance
    from paretoforge.models.supernet import Supernet, SupernetOptions, SupernetTrainer, rewire

    torch.set_num_threads(int(config["threads"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    progress = Path(config["progress_dir"])
    _log_event(progress, {"event": "worker_start", "rank": rank, "pid": os.getpid()})
    atomic_write_json(progress / f"rank{rank}.json", {"pid": os.getpid(), "epoch": None})

    prepared: Prepared = config["prepared"]
    if isinstance(prepared, ray.ObjectRef):  # a worker's: the driver's bundle, by reference
        prepared = ray.get(prepared)
    options = SupernetOptions.from_dict(config["options"])
    local = bool(config.get("local"))
    if not config["use_gpu"]:
        device = torch.device("cpu")
    else:
        device = torch.device("cuda") if local else ray.train.torch.get_device()
    teacher = prepared.load_base().to(device)
    model, importance = rewire(teacher, Importance.from_dict(prepared.importance))
    space = options.space(importance)
    history: list[dict[str, Any]] = []
    restored = _latest_checkpoint(ray.train.get_checkpoint(), Path(config["run_dir"]))
    if restored is not None:
        sn = Supernet.load(restored)
        model, history = sn.model, list(sn.history)
    losses = _distill_options(prepared, options)
    labels = losses.pop("labels", None)
    task = prepared.task
    trainer = SupernetTrainer(
        model, teacher, space, task.feeds("train"), labels, options=options,
        rank=rank, world_size=world, device=device,
        all_reduce_mean=_all_reduce_mean(device, world) if world > 1 else None, **losses,
    )  # fmt: skip
    if restored is not None:
        trainer.load_state(restored)
        shutil.rmtree(restored, ignore_errors=True)
        _log_event(progress, {"event": "resumed", "rank": rank,
                              "epochs_done": trainer.epochs_done})
    for epoch in range(trainer.epochs_done, options.epochs):
        if local and not config["use_gpu"]:
            # Here, beside the search's workers as they start: more threads once their cores
            # are idle (torch's threads spin at their barriers, so not before).
            from paretoforge._system import idle_cores

            torch.set_num_threads(max(int(config["threads"]), idle_cores(0.1)))
        atomic_write_json(progress / f"rank{rank}.json", {"pid": os.getpid(), "epoch": epoch})
        if rank == 0:
            _log_event(progress, {"event": "epoch_start", "epoch": epoch, "pid": os.getpid()})
        metrics = trainer.train_epoch(epoch)
        history.append(metrics)
        name = f"{_EPOCH_PREFIX}{epoch + 1:04d}"
        run_dir = Path(config["run_dir"])
        if local:  # Ray Train's local mode keeps no checkpoint: this process writes its own
            run_dir.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=run_dir, prefix=f".{name}.")
        with (contextlib.nullcontext(tmp) if local else
              tempfile.TemporaryDirectory(prefix="pf-supernet-epoch-")) as tmp:
            ckpt = None
            if rank == 0:
                Supernet(model=trainer.model, importance=importance, space=space,
                         key=config["key"], epochs_done=epoch + 1, options=options.to_dict(),
                         history=history).save(tmp)  # fmt: skip
                trainer.save_state(tmp)
                if local:
                    tmp = _commit_local_checkpoint(Path(tmp), run_dir / name)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
                _log_event(progress, {"event": "epoch_end", "epoch": epoch, **{
                    k: v for k, v in metrics.items() if k != "epoch"}})
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)


def _commit_local_checkpoint(tmp: Path, target: Path, keep: int = 2) -> str:
    """Rename a finished epoch directory into place and drop all but the last ``keep`` (as
    Ray Train's ``CheckpointConfig(num_to_keep=2)`` does for its workers' reports)."""
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    for old in sorted(target.parent.glob(f"{_EPOCH_PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return str(target)


def train_supernet(
    prepared: Prepared,
    options: Any,
    *,
    workers: int = 2,
    storage_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    use_gpu: bool | None = None,
    max_failures: int = 3,
    cpus_per_worker: int = 1,
    log: Any = print,
) -> Path:
    """Train (or find) the supernet of ``prepared``'s base; return its cache directory.

    The directory holds ``model.safetensors``, ``config.json`` and ``supernet.json``; load it
    with :meth:`paretoforge.models.supernet.Supernet.load`. Ray must be initialised (or is
    started locally by Ray Train).

    Args:
        prepared: The driver's bundle (base weights, importance, task data and state).
        options: A :class:`~paretoforge.models.supernet.SupernetOptions`.
        workers: Ray Train workers (data-parallel shards of the training split); 0 trains in
            this process, through Ray Train's local mode: no controller, worker processes or
            process group are started, its checkpoints are written to ``storage_dir/<key>``
            by this process (the next call after a killed one resumes from them) and nothing
            is retried (``max_failures`` does not apply); torch's threads here are set, before
            each epoch, to ``cpus_per_worker`` or the cores idle then if more (the search's
            workers start beside it), and restored after.
        storage_dir: Where Ray Train keeps runs and their checkpoints (a local path, shared by
            the nodes when there are several); default ``cache_dir()/supernets/runs``.
        resume: Resume an interrupted run of the same key from its last checkpoint; False
            starts it over.
        use_gpu: One GPU per worker with NCCL; default: when CUDA is available here.
        max_failures: Worker-group failures to recover from (each resumes from the last
            epoch's checkpoint).
        cpus_per_worker: CPUs (and torch threads) per worker.
        log: Where a line per event goes.

    Raises:
        BuildError: ``workers`` < 1, or training failed more than ``max_failures`` times.

    Example:
        >>> path = train_supernet(prepared, SupernetOptions(epochs=2), workers=2)
        ... # doctest: +SKIP
    """
    import torch
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from paretoforge.models.supernet import SIDECAR_NAME

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise BuildError(f"train_supernet: workers={workers!r} must be an integer >= 0 (0: "
                         "in this process).")
    key = supernet_cache_key(prepared, options, workers)
    final = cache_dir() / "supernets" / key
    if (final / SIDECAR_NAME).is_file():
        meta = json.loads((final / SIDECAR_NAME).read_text(encoding="utf-8"))
        if meta.get("epochs_done") == options.epochs:
            log(f"supernet {key}: cached ({meta['epochs_done']} epochs)")
            return final
    storage = Path(storage_dir) if storage_dir is not None else cache_dir() / "supernets" / "runs"
    storage.mkdir(parents=True, exist_ok=True)
    progress = storage / f"{key}{PROGRESS_DIR_SUFFIX}"
    if not resume:
        shutil.rmtree(storage / key, ignore_errors=True)
        shutil.rmtree(progress, ignore_errors=True)
    progress.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available() if use_gpu is None else bool(use_gpu)

    import ray

    start = time.perf_counter()
    trainer_cls = _trainer_class(dashboard=_state_api_available(),
                                 autoscaler=not _started_here())
    trainer = trainer_cls(
        _train_loop,
        train_loop_config={
            # local mode calls the loop here: the bundle itself, not a read-only copy
            "prepared": prepared if workers == 0 else ray.put(prepared),
            "options": options.to_dict(), "key": key,
            "progress_dir": str(progress), "run_dir": str(storage / key),
            "threads": cpus_per_worker, "use_gpu": gpu, "local": workers == 0,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(
            name=key, storage_path=str(storage),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        result = trainer.fit()
    except Exception as exc:  # ray.train.TrainingFailedError and what it wraps
        if workers == 0:
            raise BuildError(
                f"Supernet training {key} failed in this process: {exc}. Its last epoch is "
                f"kept under {str(storage / key)!r}; the next call resumes from it."
            ) from exc
        raise BuildError(
            f"Supernet training {key} failed after {max_failures} recoveries: {exc}. Its last "
            f"epoch is kept under {str(storage / key)!r}; the next call resumes from it."
        ) from exc
    finally:
        torch.set_num_threads(threads)  # local mode trained here, on its own thread count
    if result.checkpoint is None:
        raise BuildError(f"Supernet training {key} reported no checkpoint (options.epochs=0?).")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp"))
    try:
        result.checkpoint.to_directory(str(tmp))
        for name in _TRAINER_FILES:  # the cache entry is the supernet, not the optimizer
            (tmp / name).unlink(missing_ok=True)
        tmp.chmod(0o755)
        shutil.rmtree(final, ignore_errors=True)  # a stale entry of fewer epochs
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    where = f"on {workers} workers" if workers else "in this process"
    log(f"supernet {key}: trained {options.epochs} epochs {where} in "
        f"{time.perf_counter() - start:.1f}s")
    return final
