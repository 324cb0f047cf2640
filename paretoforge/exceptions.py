"""Exception hierarchy: every error paretoforge raises on purpose derives from ParetoforgeError.

A message says what went wrong, the bad value, the valid options and the fix, in one line, so
that the CLI can print it as is and exit with code 2.

Example:
    >>> from paretoforge.registry import Registry
    >>> try:
    ...     Registry("profile").get("cpu1t")
    ... except ParetoforgeError as e:  # UnknownComponentError is also a KeyError
    ...     print(type(e).__name__, e)
    UnknownComponentError Unknown profile 'cpu1t'. Available: (none).
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "MeasurementError",
    "ParetoforgeError",
    "PlacementError",
    "SpecError",
    "UnknownComponentError",
]


class ParetoforgeError(Exception):
    """Root of paretoforge's errors."""


class SpecError(ParetoforgeError):
    """A search spec (or a CLI option overriding it) is invalid."""


class UnknownComponentError(ParetoforgeError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BuildError(ParetoforgeError):
    """A candidate could not be built (surgery, recovery, export or quantization failed)."""


class MeasurementError(ParetoforgeError):
    """A candidate could not be measured on a hardware profile."""


class PlacementError(ParetoforgeError):
    """No node of the cluster can serve a hardware profile the spec asks for."""
