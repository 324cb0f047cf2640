from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paretoforge.evaluators import measure_latency
from paretoforge.evaluators.inputs import make_feeds, sequence_inputs, task_lengths
from paretoforge.exceptions import MeasurementError, SpecError
from paretoforge.hw_profiles import HardwareProfile, parse_profile

FAST = {"warmup": 2, "min_runs": 20, "max_runs": 60, "max_seconds": 0.5}


def profile(**kw: object) -> HardwareProfile:
    return HardwareProfile(name="t", device="cpu", intra_op_threads=1, resource=None, **kw)


def test_images_keep_their_shape(samples: np.ndarray) -> None:
    feeds, info = make_feeds({"pixel_values": samples}, profile(batch_size=4,
                                                                 sequence_length=7))
    assert len(feeds) == 4
    assert all(f["pixel_values"].shape == (4, 1, 8, 8) for f in feeds)
    assert info == {"sequence_inputs": []}
    # Real samples, in order, never invented.
    np.testing.assert_array_equal(feeds[1]["pixel_values"], samples[4:8])


def test_sequence_inputs_are_integer_rank_2(token_samples: dict[str, np.ndarray]) -> None:
    assert sequence_inputs(token_samples) == ["attention_mask", "input_ids"]
    assert sequence_inputs({"x": np.zeros((2, 3), np.float32)}) == []
    lengths = task_lengths(token_samples)
    np.testing.assert_array_equal(lengths, token_samples["attention_mask"].sum(1))
    with pytest.raises(MeasurementError, match="No token-sequence inputs"):
        task_lengths({"x": np.zeros((2, 3), np.float32)})


@pytest.mark.parametrize("length", [5, 24, 40])
def test_fixed_length_is_exact_and_made_of_real_tokens(
    token_samples: dict[str, np.ndarray], length: int
) -> None:
    feeds, info = make_feeds(token_samples, profile(batch_size=2, sequence_length=length))
    lengths = task_lengths(token_samples)
    for k, f in enumerate(feeds):
        assert f["input_ids"].shape == f["attention_mask"].shape == (2, length)
        assert f["input_ids"].dtype == np.int64
        # Every token is one of the sample's real tokens; the mask is all ones.
        for row, i in zip(f["input_ids"], (2 * k, 2 * k + 1), strict=True):
            real = token_samples["input_ids"][i, : lengths[i]]
            assert set(row.tolist()) <= set(real.tolist())
            np.testing.assert_array_equal(row[: min(length, lengths[i])],
                                          real[: min(length, lengths[i])])
        assert f["attention_mask"].all()
    assert info["sequence_lengths"] == "fixed"
    assert info["lengths"]["min"] == info["lengths"]["max"] == length


def test_task_lengths_follow_the_data(token_samples: dict[str, np.ndarray]) -> None:
    feeds, info = make_feeds(token_samples, profile(batch_size=1, sequence_lengths="task"))
    real = sorted(task_lengths(token_samples).tolist())
    widths = sorted(f["input_ids"].shape[1] for f in feeds)
    assert widths == real  # batch 1: each batch is exactly one sample's real length
    for f in feeds:  # a batch of one real sample has no padding left
        assert f["attention_mask"].all()
    assert info["sequence_lengths"] == "task"
    assert info["lengths"]["min"] == real[0] and info["lengths"]["max"] == real[-1]


def test_task_lengths_batch_pads_to_its_longest_and_caps(
    token_samples: dict[str, np.ndarray]
) -> None:
    feeds, _ = make_feeds(token_samples, profile(batch_size=4, sequence_lengths="task"))
    for f in feeds:
        assert f["attention_mask"].sum(1).max() == f["input_ids"].shape[1]
    capped, info = make_feeds(
        token_samples, profile(batch_size=4, sequence_lengths="task", sequence_length=6)
    )
    assert max(f["input_ids"].shape[1] for f in capped) <= 6
    assert info["lengths"]["max"] <= 6
    # The same seed gives the same batches; another seed another order.
    again, _ = make_feeds(token_samples, profile(batch_size=4, sequence_lengths="task"))
    assert all(np.array_equal(a["input_ids"], b["input_ids"])
               for a, b in zip(feeds, again, strict=True))


def test_feeds_errors(token_samples: dict[str, np.ndarray]) -> None:
    with pytest.raises(MeasurementError, match="No inputs"):
        make_feeds({}, profile())
    with pytest.raises(MeasurementError, match="'input_ids' holds no samples"):
        make_feeds({"input_ids": token_samples["input_ids"][:0]}, profile())
    bad = {"input_ids": token_samples["input_ids"],
           "attention_mask": token_samples["attention_mask"][:, :5]}
    with pytest.raises(MeasurementError, match="different widths"):
        make_feeds(bad, profile(sequence_length=4))


def test_sequence_profile_fields_validate() -> None:
    p = parse_profile({"name": "txt", "device": "cpu", "sequence_length": 128,
                       "sequence_lengths": "task"})
    assert p.sequence_lengths == "task" and p.sequence_length == 128
    with pytest.raises(SpecError, match="sequence_lengths"):
        parse_profile({"name": "txt", "device": "cpu", "sequence_lengths": "random"})


@pytest.mark.parametrize(
    ("kw", "widths"),
    [({"sequence_length": 12}, {12}), ({"sequence_lengths": "task"}, None)],
)
def test_sequence_model_is_measured_in_the_profile_shape(
    token_onnx: Path, token_samples: dict[str, np.ndarray], kw: dict, widths: set | None
) -> None:
    m = measure_latency(token_onnx, profile(batch_size=2, **kw), token_samples, **FAST)
    assert 0 < m.min_ms <= m.p50_ms <= m.p99_ms
    lengths = m.env["inputs"]["lengths"]
    assert m.env["inputs"]["sequence_inputs"] == ["attention_mask", "input_ids"]
    if widths is not None:
        assert {lengths["min"], lengths["max"]} == widths
    else:
        assert lengths["min"] < lengths["max"]  # a distribution, not one length
