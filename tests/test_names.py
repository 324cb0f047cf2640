"""The shared names: trial attributes, stop reasons, failure kinds, and the one list of
precisions that every consumer uses."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from paretoforge.names import PRECISIONS, FailKind, Precision, StopReason, TrialAttr


def test_trial_attribute_names_are_plain_unique_strings() -> None:
    names = TrialAttr.names()
    assert len(names) == len(set(names)) >= 20
    assert all(type(n) is str for n in names)  # Optuna stores plain strings
    # the values journals written before this module hold
    assert {"config", "key", "metrics", "artifact_dir", "fail_kind", "cached_from",
            "predicted_metrics", "is_base"} <= set(names)
    with pytest.raises(TypeError):
        TrialAttr()


def test_enum_values_are_the_stored_strings() -> None:
    assert [k.value for k in FailKind] == ["build", "measurement", "error", "worker_lost",
                                           "timeout", "interrupted"]
    assert FailKind("worker_lost") is FailKind.WORKER_LOST and FailKind.BUILD == "build"
    assert [k for k in FailKind if not k.counts_as_failure] == [FailKind.INTERRUPTED]
    assert {r.value for r in StopReason} == {"max_failures", "time_budget", "exhausted"}


def test_phases_are_the_stored_strings() -> None:
    from paretoforge.names import Phase

    assert [p.value for p in Phase] == ["one-shot", "finish"]
    assert Phase("finish") is Phase.FINISH and Phase.ONE_SHOT == "one-shot"


def test_precisions_are_the_literal_type() -> None:
    assert PRECISIONS == typing.get_args(Precision)
    assert PRECISIONS == ("fp32", "int8", "int8-static", "fp16", "int4")


def test_candidate_config_accepts_exactly_the_precisions() -> None:
    from paretoforge.search_spaces import CandidateConfig

    base = {"layers_kept": 1, "heads_kept": 1, "ffn_kept": 1.0}
    for p in PRECISIONS:
        assert CandidateConfig(**base, precision=p).precision == p
    schema = CandidateConfig.model_json_schema()["properties"]["precision"]
    assert tuple(schema["enum"]) == PRECISIONS
    with pytest.raises(ValidationError):
        CandidateConfig(**base, precision="int2")


def test_every_consumer_uses_the_one_list() -> None:
    import paretoforge.kernels as kernels
    from paretoforge.evaluators.config_features import BYTES_PER_WEIGHT
    from paretoforge.evaluators.predictor import FEATURES, macs_by_precision
    from paretoforge.hw_profiles import PROFILES
    from paretoforge.search_spaces import SPACES

    assert kernels.PRECISIONS is PRECISIONS
    assert set(BYTES_PER_WEIGHT) == set(PRECISIONS)
    for p in PRECISIONS:  # every precision has a MAC rate feature; only fp32 uses fp32's
        (feature,) = [k for k, v in macs_by_precision(1.0, p).items() if v]
        assert feature in FEATURES and (feature == "macs_fp32") == (p == "fp32"), p
    for name in PROFILES.names():
        assert set(PROFILES.get(name).precisions) <= set(PRECISIONS), name
    for name in SPACES.names():
        assert set(SPACES.get(name).dimensions.get("precision", ())) <= set(PRECISIONS), name


def test_apply_precision_refuses_what_is_not_listed(tmp_path) -> None:
    from paretoforge.exceptions import SpecError
    from paretoforge.kernels import apply_precision

    with pytest.raises(SpecError, match=", ".join(PRECISIONS)):
        apply_precision(tmp_path / "m.onnx", tmp_path / "out.onnx", "int2")


def test_a_profile_refuses_an_unknown_precision() -> None:
    from paretoforge.hw_profiles import HardwareProfile

    p = HardwareProfile(name="edge", device="cpu", precisions=PRECISIONS)
    assert p.precisions == PRECISIONS
    with pytest.raises(ValidationError, match="unknown precision 'int2'"):
        HardwareProfile(name="edge", device="cpu", precisions=("fp32", "int2"))
