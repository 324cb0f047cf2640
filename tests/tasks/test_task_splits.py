"""Train / validation / test: the division of the held-out part, the scored split, the
withheld test split, and a task written before the three-way split (tests/tasks/toy_task.py)."""

from __future__ import annotations

import numpy as np
import pytest
import toy_task  # noqa: F401  (registers "digit-parity", an older task: x_heldout / y_heldout)

from paretoforge.exceptions import ParetoforgeError, SpecError
from paretoforge.tasks import TaskData, load_task
from paretoforge.tasks._base import divide_heldout


def test_division_is_a_seeded_stratified_partition_of_the_heldout_part() -> None:
    idx = np.arange(100, 160)
    y = np.repeat([0, 1, 2], 20)
    val, test, rec = divide_heldout(idx, y, 0.25, 3, task="t")
    assert sorted(np.r_[val, test].tolist()) == idx.tolist()  # a partition
    assert set(val).isdisjoint(test)
    assert len(test) == 15 and rec["n_test"] == 15 and rec["n_validation"] == 45
    # stratified: each class in test in its proportion
    assert np.bincount(y[np.isin(idx, test)]).tolist() == [5, 5, 5]
    again = divide_heldout(idx, y, 0.25, 3, task="t")
    assert (again[1] == test).all() and again[2] == rec  # deterministic
    other = divide_heldout(idx, y, 0.25, 4, task="t")
    assert other[2]["test_indices_sha256"] != rec["test_indices_sha256"]
    assert "stratify=labels" in rec["validation_test_method"]
    # no labels (-1): a seeded shuffle
    _, _, unlabelled = divide_heldout(idx, np.full(60, -1), 0.5, 0, task="t")
    assert "stratify" not in unlabelled["validation_test_method"]
    with pytest.raises(SpecError, match="at least 2"):
        divide_heldout(np.arange(1), None, 0.5, 0, task="t")


def test_scoring_view_and_the_withheld_test_split() -> None:
    data = load_task("digits")
    assert data.scored == "validation" and data.y_scored is data.y_validation
    test = data.scoring("test")
    assert test.y_scored is data.y_test and test.x_heldout is data.x_test
    assert data.scored == "validation"  # the view is a copy
    np.testing.assert_array_equal(data.feeds("heldout")["pixel_values"], data.x_validation)
    workers = data.without_test()
    assert not workers.has_test and data.has_test
    for call in (lambda: workers.feeds("test"), lambda: workers.scoring("test"),
                 lambda: workers.labels("test")):
        with pytest.raises(ParetoforgeError, match="test split is withheld"):
            call()
    np.testing.assert_array_equal(workers.feeds("validation")["pixel_values"],
                                  data.x_validation)
    with pytest.raises(SpecError, match="Available: train, validation, test"):
        data.feeds("dev")


def test_an_older_task_keeps_working_its_heldout_part_halved() -> None:
    from paretoforge.tasks import TASKS

    data = load_task("digit-parity", seed=1)
    digits = load_task("digits", seed=1)
    # the toy task passes digits' (validation) arrays as its x_heldout: TaskData halves them
    n = len(digits.y_validation)
    assert data.split["n_heldout"] == n
    assert len(data.y_validation) + len(data.y_test) == n
    assert abs(len(data.y_validation) - len(data.y_test)) <= 1
    assert "older task" in data.split["validation_test_method"]
    rows = {r.tobytes() for r in digits.x_validation.reshape(n, -1)}
    val = {r.tobytes() for r in data.x_validation.reshape(len(data.y_validation), -1)}
    test = {r.tobytes() for r in data.x_test.reshape(len(data.y_test), -1)}
    assert val | test <= rows and not (val & test)
    # its score reads data.y_heldout: the split being scored
    task = TASKS.get("digit-parity")
    perfect = np.eye(2, dtype=np.float32)
    for split in ("validation", "test"):
        view = data.scoring(split)
        assert task.score(perfect[view.y_scored], view, {}) == 1.0
    again = load_task("digit-parity", seed=1)
    np.testing.assert_array_equal(again.x_test, data.x_test)  # deterministic


def test_an_older_task_refuses_another_test_fraction_with_a_clear_message() -> None:
    assert load_task("digit-parity", test_fraction=0.5).split["test_fraction"] == 0.5
    with pytest.raises(SpecError, match="takes no test_fraction.*task.split.test_fraction"):
        load_task("digit-parity", test_fraction=0.3)


def test_the_spec_sets_test_fraction_for_every_split_task() -> None:
    from paretoforge.pipeline.prepare import load_spec_task
    from paretoforge.testing import tiny_spec

    d = tiny_spec(task={"name": "digits", "split": {"heldout_fraction": 0.3,
                                                   "test_fraction": 0.4}})
    data = load_spec_task(d)
    assert data.split["test_fraction"] == 0.4 and data.split["heldout_fraction"] == 0.3
    assert data.split["n_test"] == int(np.ceil(0.4 * data.split["n_heldout"]))
    with pytest.raises(SpecError, match="test_fraction"):
        tiny_spec(task={"name": "digits", "split": {"test_fraction": 1.0}})


def test_taskdata_refuses_half_a_split() -> None:
    d = load_task("digits")
    common = {"name": "x", "x_train": d.x_train, "y_train": d.y_train, "num_classes": 10,
              "input_name": "pixel_values", "metric": "accuracy", "preprocessing": "",
              "split": {}}
    with pytest.raises(SpecError, match="x_validation"):
        TaskData(**common)
    with pytest.raises(SpecError, match="both x_test and y_test"):
        TaskData(**common, x_validation=d.x_validation, y_validation=d.y_validation,
                 x_test=d.x_test)
    with pytest.raises(SpecError, match="not both"):
        TaskData(**common, x_validation=d.x_validation, y_validation=d.y_validation,
                 x_heldout=d.x_test, y_heldout=d.y_test)
