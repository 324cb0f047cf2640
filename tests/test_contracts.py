"""Contract suites over every REGISTERED family adapter, hardware profile and space preset.

The registries are read when the tests are collected, so an entry registered later is checked
here without a test of its own (the checks: :mod:`paretoforge.testing.contracts`).
"""

from __future__ import annotations

import pytest

from paretoforge.hw_profiles import PROFILES
from paretoforge.models.adapters import ADAPTERS
from paretoforge.search_spaces import SPACES
from paretoforge.testing import contracts

# -- model family adapters ----------------------------------------------------------------------


@pytest.mark.parametrize("family", ADAPTERS.names())
def test_family_tiny_model_builds(family: str) -> None:
    contracts.check_family_builds(family)


@pytest.mark.parametrize("family", ADAPTERS.names())
def test_family_identity_plan_changes_nothing(family: str) -> None:
    contracts.check_family_identity_prune(family)


@pytest.mark.parametrize("family", ADAPTERS.names())
def test_family_prune_shrinks_runs_and_reloads(family: str, tmp_path) -> None:
    contracts.check_family_prune(family, tmp_path)


@pytest.mark.parametrize("family", ADAPTERS.names())
def test_family_onnx_matches_torch(family: str, tmp_path) -> None:
    contracts.check_family_exports(family, tmp_path)


def test_an_adapter_without_a_tiny_config_is_told_so() -> None:
    from paretoforge.exceptions import BuildError
    from paretoforge.models.adapters import ADAPTERS

    class Bare(type(ADAPTERS.get("bert"))):  # type: ignore[misc]
        tiny_config_args = {}

    with pytest.raises(BuildError, match="declares no tiny_config_args"):
        Bare().tiny_config()


# -- hardware profiles --------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROFILES.names())
def test_profile_contract(name: str) -> None:
    contracts.check_profile(PROFILES.get(name), registered_as=name)


def test_profile_names_are_unique() -> None:
    names = [PROFILES.get(n).name for n in PROFILES.names()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", PROFILES.names())
def test_cpu_profile_measures_a_tiny_model(name: str, tmp_path) -> None:
    from paretoforge.kernels.ort import available_cores

    profile = PROFILES.get(name)
    if not (profile.device == "cpu" and profile.resource is None
            and profile.runtime == "onnxruntime"):
        pytest.skip(f"{name} is measured only where its hardware is ({profile.resource})")
    if (profile.intra_op_threads or 1) > available_cores():
        pytest.skip(f"{name} needs {profile.intra_op_threads} cores")
    contracts.measure_tiny(profile, tmp_path)


def test_a_broken_profile_breaks_the_contract() -> None:
    from paretoforge.hw_profiles import HardwareProfile

    # model_construct: the profile model itself may refuse the unknown precision.
    odd = HardwareProfile.model_construct(
        **{**PROFILES.get("cpu").model_dump(), "name": "odd", "precisions": ("fp32", "int3")})
    with pytest.raises(contracts.ContractError, match="'int3'.*kernels cannot build"):
        contracts.check_profile(odd)
    with pytest.raises(contracts.ContractError, match="registered under another name"):
        contracts.check_profile(PROFILES.get("cpu"), registered_as="cpu-1t")


# -- search-space presets -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACES.names())
def test_space_preset_validates(name: str) -> None:
    contracts.check_space_preset(name)


@pytest.mark.parametrize("name", SPACES.names())
def test_space_suggest_gives_stable_keys(name: str) -> None:
    contracts.check_space_suggest(name)


@pytest.mark.parametrize("name", SPACES.names())
def test_space_holds_the_unpruned_base(name: str) -> None:
    contracts.check_space_base_in_space(name)
