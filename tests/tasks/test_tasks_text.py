"""Text classification from CSV / TSV / JSONL: tokenized inputs, a clean split, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paretoforge.exceptions import SpecError
from paretoforge.tasks import TASKS, load_task
from paretoforge.tasks.text import encode_labels, read_examples

GOOD = ["the movie was great", "a very good film", "great acting", "fun plot", "good fun"]
BAD = ["the film was terrible", "a boring plot", "bad acting", "not good", "very bad movie"]


def _write_csv(path, rows, header=("text", "label"), delimiter=","):
    lines = [delimiter.join(header)] + [delimiter.join(str(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(n=4):
    return [(t, 1) for t in GOOD * n] + [(t, 0) for t in BAD * n]


def test_registered():
    assert "text-classification" in TASKS and "embedding-fidelity" in TASKS


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_loads_tokenized_fixed_length_inputs(tmp_path, tokenizer_dir, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in _rows()))
    else:
        _write_csv(path, _rows(), delimiter="\t" if suffix == ".tsv" else ",")
    task = load_task("text-classification", path=str(path), checkpoint=str(tokenizer_dir),
                     max_length=12, heldout_fraction=0.25, seed=0)  # fmt: skip
    assert task.input_names == ("input_ids", "attention_mask")
    n = len(_rows())
    n_val, n_test = len(task.y_validation), len(task.y_test)
    assert len(task.y_train) + n_val + n_test == n and n_val + n_test == n // 4
    assert task.split["n_validation"] == n_val and task.split["n_test"] == n_test
    for split in ("train", "validation", "test"):
        feeds = task.feeds(split)
        for arr in feeds.values():
            assert arr.dtype == np.int64 and arr.shape[1] == 12
        mask = feeds["attention_mask"]
        assert (mask[:, 0] == 1).all() and (mask == 0).any()  # right padding
        assert (feeds["input_ids"][mask == 0] == 0).all()  # [PAD]
    assert task.num_classes == 2 and set(task.y_validation) == set(task.y_test) == {0, 1}
    assert task.describe()["input_shapes"] == {"input_ids": [12], "attention_mask": [12]}
    again = load_task("text-classification", path=str(path), checkpoint=str(tokenizer_dir),
                      max_length=12, heldout_fraction=0.25, seed=0)  # fmt: skip
    np.testing.assert_array_equal(again.x_validation["input_ids"], task.x_validation["input_ids"])
    np.testing.assert_array_equal(again.x_test["input_ids"], task.x_test["input_ids"])


def test_string_labels_and_separate_heldout_file(tmp_path, tokenizer_dir):
    train = _write_csv(tmp_path / "t.csv", [(t, "pos") for t in GOOD] + [(t, "neg") for t in BAD])
    held = _write_csv(tmp_path / "h.csv", [("good movie", "pos"), ("bad movie", "neg")])
    task = load_task("text-classification", path=str(train), checkpoint=str(tokenizer_dir),
                     heldout_path=str(held), max_length=8)  # fmt: skip
    assert task.split["label_names"] == ["neg", "pos"]
    # the held-out file's two examples: one validation, one test
    assert len(task.y_validation) == len(task.y_test) == 1 and len(task.y_train) == 10
    assert sorted(task.y_validation.tolist() + task.y_test.tolist()) == [0, 1]


def test_errors_name_the_file_and_the_fix(tmp_path, tokenizer_dir):
    ckpt = str(tokenizer_dir)
    missing = tmp_path / "nope.csv"
    with pytest.raises(SpecError, match="nope.csv.*does not exist"):
        load_task("text-classification", path=str(missing), checkpoint=ckpt)
    wrong = _write_csv(tmp_path / "cols.csv", [("x", 1)], header=("sentence", "label"))
    with pytest.raises(SpecError, match=r"cols.csv.*no column\(s\) \['text'\].*header"):
        read_examples(wrong)
    with pytest.raises(SpecError, match="suffix '.txt'"):
        read_examples(tmp_path / "data.txt")
    out_of_range = _write_csv(tmp_path / "range.csv", _rows(1) + [("good", 7)])
    with pytest.raises(SpecError, match=r"range.csv.*label '7'.*out of range 0\.\.2"):
        load_task("text-classification", path=str(out_of_range), checkpoint=ckpt, num_labels=3)
    empty = _write_csv(tmp_path / "empty.csv", [("good", 1), ("", 0)])
    with pytest.raises(SpecError, match="empty.csv' line 3.*non-empty text"):
        read_examples(empty)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "good", "label": 1}\n{"text": "bad"}\n')
    with pytest.raises(SpecError, match=r"bad.jsonl' line 2: no field\(s\) \['label'\]"):
        read_examples(jsonl)
    with pytest.raises(SpecError, match="Cannot load a tokenizer"):
        load_task("text-classification", path=str(_write_csv(tmp_path / "ok.csv", _rows())),
                  checkpoint=str(tmp_path))  # fmt: skip


def test_encode_labels_rules():
    assert encode_labels([0, 2, 1], num_labels=None, source="s") == ([0, 2, 1], ["0", "1", "2"])
    assert encode_labels(["1", "0"], num_labels=2, source="s")[0] == [1, 0]
    with pytest.raises(SpecError, match="out of range"):
        encode_labels([-1, 0], num_labels=None, source="s")
    with pytest.raises(SpecError, match="mix integers and names"):
        encode_labels([1, "pos"], num_labels=None, source="s")
    with pytest.raises(SpecError, match="num_labels=3 but the labels have 2 names"):
        encode_labels(["a", "b"], num_labels=3, source="s")
