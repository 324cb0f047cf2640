"""Supernet training on real Ray Train workers: it learns, it is cached, it survives a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from paretoforge.exceptions import BuildError
from paretoforge.models.supernet import Supernet, SupernetOptions
from paretoforge.pipeline.prepare import prepare_cached
from paretoforge.pipeline.supernet import (
    PROGRESS_DIR_SUFFIX,
    supernet_cache_key,
    train_supernet,
)
from paretoforge.testing import tiny_spec


@pytest.fixture(scope="module")
def prepared():
    return prepare_cached(tiny_spec(), log=lambda *_: None)


def _events(storage: Path, key: str) -> list[dict]:
    path = storage / f"{key}{PROGRESS_DIR_SUFFIX}" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _kl_smallest(sn: Supernet, teacher, x) -> float:
    with torch.no_grad():
        t = torch.log_softmax(teacher.eval()(x).logits, -1)
        s = torch.log_softmax(sn.cut(sn.space.smallest()).eval()(x).logits, -1)
    return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean"))


def test_two_workers_train_then_the_cache_answers(ray_cluster, prepared, tmp_path):
    from paretoforge.models.importance import Importance
    from paretoforge.models.supernet import rewire

    options = SupernetOptions(epochs=2, lr=3e-3, batch_size=64, n_random=1, alpha=1.0)
    lines: list[str] = []
    path = train_supernet(prepared, options, workers=2, storage_dir=tmp_path, log=lines.append)
    key = supernet_cache_key(prepared, options, 2)
    assert path.name == key and (path / "model.safetensors").is_file()
    assert not (path / "trainer_state.json").exists()
    sn = Supernet.load(path)
    assert sn.epochs_done == 2 and sn.key == key
    assert [h["epoch"] for h in sn.history] == [0, 1]
    assert sn.history[1]["loss_smallest"] < sn.history[0]["loss_smallest"]
    teacher = prepared.load_base()
    x = torch.as_tensor(prepared.task.x_train[:512])
    untrained = rewire(teacher, Importance.from_dict(prepared.importance))[0]
    before = Supernet(untrained, sn.importance, sn.space)
    assert _kl_smallest(sn, teacher, x) < _kl_smallest(before, teacher, x)
    starts = [e for e in _events(tmp_path, key) if e["event"] == "worker_start"]
    assert len(starts) == 2 and {e["rank"] for e in starts} == {0, 1}
    # A cluster this process started has no autoscaler: no coordinator actor was asked for.
    import ray

    with pytest.raises(ValueError):
        ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")

    t0 = time.perf_counter()
    again = train_supernet(prepared, options, workers=2, storage_dir=tmp_path,
                           log=lines.append)  # fmt: skip
    assert again == path and "cached" in lines[-1]
    assert time.perf_counter() - t0 < 5
    assert len([e for e in _events(tmp_path, key) if e["event"] == "worker_start"]) == 2


def test_workers_must_not_be_negative(prepared, tmp_path):
    with pytest.raises(BuildError, match="workers=-1"):
        train_supernet(prepared, SupernetOptions(epochs=1), workers=-1, storage_dir=tmp_path)


def test_local_mode_trains_here_and_resumes_after_a_failed_epoch(ray_cluster, prepared, tmp_path,
                                                                 monkeypatch):
    # workers=0: Ray Train's local mode, in this process. It writes its own epoch checkpoints
    # (local mode keeps none), so a run that dies in epoch 1 resumes from epoch 0's.
    from paretoforge.models.supernet import SupernetTrainer

    options = SupernetOptions(epochs=3, lr=3e-3, batch_size=64, n_random=1, seed=2)
    key = supernet_cache_key(prepared, options, 0)
    assert key == supernet_cache_key(prepared, options, 1)  # world size 1 either way
    real = SupernetTrainer.train_epoch

    def fail_in_epoch_1(self, epoch):
        if epoch == 1:
            raise RuntimeError("injected failure in epoch 1")
        return real(self, epoch)

    monkeypatch.setattr(SupernetTrainer, "train_epoch", fail_in_epoch_1)
    threads = torch.get_num_threads()
    with pytest.raises(BuildError, match="failed in this process.*injected"):
        train_supernet(prepared, options, workers=0, storage_dir=tmp_path,
                       cpus_per_worker=1, log=lambda *_: None)
    assert torch.get_num_threads() == threads  # restored after training here
    assert sorted(p.name for p in (tmp_path / key).iterdir()) == ["epoch_0001"]
    monkeypatch.setattr(SupernetTrainer, "train_epoch", real)
    lines: list[str] = []
    path = train_supernet(prepared, options, workers=0, storage_dir=tmp_path,
                          log=lines.append)  # fmt: skip
    assert "in this process" in lines[-1]
    sn = Supernet.load(path)
    assert sn.epochs_done == 3 and [h["epoch"] for h in sn.history] == [0, 1, 2]
    events = _events(tmp_path, key)
    assert {e["pid"] for e in events if e["event"] == "worker_start"} == {os.getpid()}
    assert [e["epochs_done"] for e in events if e["event"] == "resumed"] == [1]
    begun = [e["epoch"] for e in events if e["event"] == "epoch_start"]
    assert begun == [0, 1, 1, 2], begun  # epoch 0 not trained again
    # the last two epochs' checkpoints are kept, as Ray Train keeps its workers'
    assert sorted(p.name for p in (tmp_path / key).iterdir()) == ["epoch_0002", "epoch_0003"]


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_epoch(ray_cluster, prepared, tmp_path):
    options = SupernetOptions(epochs=3, batch_size=32, n_random=2, seed=1)
    key = supernet_cache_key(prepared, options, 2)
    progress = tmp_path / f"{key}{PROGRESS_DIR_SUFFIX}"
    killed: list[int] = []

    def kill_rank1_in_epoch_1() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            try:
                state = json.loads((progress / "rank1.json").read_text())
            except (OSError, ValueError):
                state = {}
            if state.get("epoch") == 1:
                time.sleep(0.5)  # inside epoch 1, after epoch 0's checkpoint was reported
                os.kill(state["pid"], signal.SIGKILL)
                killed.append(state["pid"])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank1_in_epoch_1, daemon=True)
    killer.start()
    path = train_supernet(prepared, options, workers=2, storage_dir=tmp_path,
                          max_failures=2, log=lambda *_: None)  # fmt: skip
    killer.join(timeout=5)
    assert killed, "rank 1 never reached epoch 1"
    sn = Supernet.load(path)
    assert sn.epochs_done == 3
    assert [h["epoch"] for h in sn.history] == [0, 1, 2]  # each epoch counted once
    events = _events(tmp_path, key)
    assert len([e for e in events if e["event"] == "worker_start"]) == 4  # the group restarted
    resumed = [e for e in events if e["event"] == "resumed"]
    assert {e["epochs_done"] for e in resumed} == {1} and len(resumed) == 2
    begun = [e["epoch"] for e in events if e["event"] == "epoch_start"]
    listing = sorted(p.name for p in (tmp_path / key).iterdir())
    assert begun.count(0) == 1, (begun, listing)  # not restarted from 0
    assert begun.count(1) == 2 and begun.count(2) == 1, begun


def test_the_state_api_check_answers_at_once_without_a_dashboard(ray_cluster):
    # The test cluster runs no dashboard: the check must say so without the State API
    # client's 40 s of GCS retries, and the trainer then drops the placement-group cleaner.
    from paretoforge.pipeline.supernet import _state_api_available, _trainer_class

    t0 = time.perf_counter()
    assert _state_api_available() is False
    assert time.perf_counter() - t0 < 5.0
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import (
        PlacementGroupCleanerCallback,
    )

    for dashboard in (False, True):
        cls = _trainer_class(dashboard=dashboard)
        assert issubclass(cls, TorchTrainer)
        trainer = cls(lambda config: None, scaling_config=ray.train.ScalingConfig(num_workers=1))
        kinds = {type(c) for c in trainer._create_default_callbacks()}
        assert DatasetsCallback not in kinds  # never: the data is in the bundle
        assert (PlacementGroupCleanerCallback in kinds) is dashboard
