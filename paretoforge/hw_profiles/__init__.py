"""Named hardware targets and where in the cluster they live.

Cheap to import: pydantic only; YAML is read lazily.

Example:
    >>> from paretoforge.hw_profiles import get_profile
    >>> get_profile("cpu-1t").intra_op_threads
    1
"""

from __future__ import annotations

from paretoforge.hw_profiles._builtin import (
    PROFILES,
    get_profile,
    load_profiles_yaml,
    parse_profile,
    register_profile,
)
from paretoforge.hw_profiles._profile import HardwareProfile
from paretoforge.hw_profiles.doctor import served_profiles

__all__ = [
    "PROFILES",
    "HardwareProfile",
    "get_profile",
    "load_profiles_yaml",
    "parse_profile",
    "register_profile",
    "served_profiles",
]
