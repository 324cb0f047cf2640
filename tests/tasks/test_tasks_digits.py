"""The digits task: a stratified, deterministic partition with a documented preprocessing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from paretoforge.exceptions import SpecError, UnknownComponentError
from paretoforge.tasks import TASKS, TaskData, load_task


def _rows(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


def _held(task: TaskData) -> tuple[np.ndarray, np.ndarray]:
    """The held-out part (validation + test), in ascending dataset index."""
    idx = np.concatenate([_split_indices(task, "validation"), _split_indices(task, "test")])
    order = np.argsort(idx)
    return (np.concatenate([task.x_validation, task.x_test])[order],
            np.concatenate([task.y_validation, task.y_test])[order])


def _split_indices(task: TaskData, split: str) -> np.ndarray:
    held = np.asarray(task.split["heldout_indices"])
    test = np.asarray(task.split["test_indices"])
    return test if split == "test" else np.setdiff1d(held, test)


def test_split_is_a_stratified_partition_of_the_dataset():
    from sklearn.datasets import load_digits

    task = load_task("digits", heldout_fraction=0.25, seed=0)
    data = load_digits()
    # Every image lands in exactly one split: together they are the dataset, row for row.
    every = np.concatenate([task.x_train, task.x_validation, task.x_test])
    full = (data.images / 16.0).astype(np.float32)[:, None]
    np.testing.assert_array_equal(_rows(every), _rows(full))
    assert task.split["n_train"] == len(task.y_train)
    assert task.split["n_heldout"] == len(task.y_validation) + len(task.y_test)
    assert task.split["n_validation"] == len(task.y_validation)
    assert task.split["n_test"] == len(task.y_test)
    # Stratified: each class is held out, and then put in test, in the dataset's proportion.
    for c in range(10):
        total = int((data.target == c).sum())
        val, test = int((task.y_validation == c).sum()), int((task.y_test == c).sum())
        assert abs(val + test - 0.25 * total) <= 1, (c, val, test, total)
        assert abs(test - val) <= 1, (c, val, test)


def test_recorded_heldout_indices_rebuild_the_heldout_set():
    import hashlib

    from sklearn.datasets import load_digits

    task = load_task("digits", seed=2)
    idx = np.asarray(task.split["heldout_indices"], dtype="<i8")
    assert hashlib.sha256(idx.tobytes()).hexdigest() == task.split["heldout_indices_sha256"]
    data = load_digits()
    x_held, y_held = _held(task)
    np.testing.assert_array_equal(y_held, data.target[idx])
    np.testing.assert_array_equal(x_held[:, 0], (data.images[idx] / 16.0).astype("f4"))
    # each held-out split is rebuilt from its recorded indices, and its sha256 matches
    for split, x, y in (("validation", task.x_validation, task.y_validation),
                        ("test", task.x_test, task.y_test)):
        sidx = _split_indices(task, split).astype("<i8")
        assert hashlib.sha256(sidx.tobytes()).hexdigest() == \
            task.split[f"{split}_indices_sha256"]
        np.testing.assert_array_equal(y, data.target[sidx])
        np.testing.assert_array_equal(x[:, 0], (data.images[sidx] / 16.0).astype("f4"))
    assert set(_split_indices(task, "test")).isdisjoint(_split_indices(task, "validation"))


def test_arrays_are_preprocessed_as_documented():
    task = load_task("digits")
    assert isinstance(task, TaskData)
    assert task.x_train.dtype == np.float32 and task.x_validation.dtype == np.float32
    assert task.y_train.dtype == np.int64 and task.y_test.dtype == np.int64
    assert task.x_train.shape[1:] == (1, 8, 8)
    assert 0.0 <= task.x_train.min() and task.x_train.max() <= 1.0
    assert task.num_classes == 10 and task.input_name == "pixel_values"
    assert task.metric == "accuracy" and "divided by 16.0" in task.preprocessing


def test_same_seed_same_split_other_seed_other_split():
    a = load_task("digits", seed=3)
    b = load_task("digits", seed=3)
    c = load_task("digits", seed=4)
    np.testing.assert_array_equal(a.x_validation, b.x_validation)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert a.split == b.split
    assert a.split["heldout_indices_sha256"] != c.split["heldout_indices_sha256"]
    assert a.split["test_indices_sha256"] != c.split["test_indices_sha256"]


def test_heldout_fraction_sets_the_size():
    task = load_task("digits", heldout_fraction=0.5)
    assert abs(len(task.y_validation) + len(task.y_test) - 1797 / 2) <= 1


def test_test_fraction_divides_the_heldout_part_and_keeps_train():
    half = load_task("digits", test_fraction=0.5)
    small = load_task("digits", test_fraction=0.2)
    np.testing.assert_array_equal(half.x_train, small.x_train)  # train vs held-out unchanged
    assert half.split["heldout_indices_sha256"] == small.split["heldout_indices_sha256"]
    assert small.split["n_test"] == math.ceil(0.2 * small.split["n_heldout"])
    assert small.split["n_validation"] + small.split["n_test"] == small.split["n_heldout"]
    assert small.split["test_fraction"] == 0.2


@pytest.mark.parametrize("bad", [0, 1.0, -0.1, math.nan, "0.5", True])
def test_bad_test_fraction_raises_spec_error(bad):
    with pytest.raises(SpecError, match="test_fraction"):
        load_task("digits", test_fraction=bad)


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.1, 1.5, math.nan, "0.2", True, None])
def test_bad_heldout_fraction_raises_spec_error(bad):
    with pytest.raises(SpecError, match="heldout_fraction"):
        load_task("digits", heldout_fraction=bad)


def test_unknown_parameter_raises_spec_error_naming_valid_ones():
    with pytest.raises(SpecError, match="heldout_fraction, seed, test_fraction"):
        load_task("digits", test_size=0.2)


def test_unknown_task_suggests_the_close_name():
    assert "digits" in TASKS
    with pytest.raises(UnknownComponentError, match="Did you mean 'digits'"):
        load_task("digit")


def test_describe_is_json_able():
    import json

    info = load_task("digits").describe()
    assert json.loads(json.dumps(info))["input_shape"] == [1, 8, 8]


def test_importing_tasks_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, paretoforge.tasks; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
