"""Custom search dimensions, written in Python by the user: :class:`Dimension` and its registry.

A dimension has a name, its choices, a default (the value that leaves the candidate as it
is: the unpruned base, trial 0, has it), and the pipeline stage at which its ``apply``
changes the candidate:

* ``derive``: ``apply(model, value) -> model`` on the PyTorch model after surgery, before
  recovery (it changes the weights, so the derive key and every key after it include it);
* ``export``: ``apply(model, value) -> model`` on a copy of the recovered model, just before
  it is saved and traced to ONNX (the recovered model is shared; the export key includes it);
* ``passes``: ``apply(onnx_in, onnx_out, value)`` on the fp32 graph, after the fusions and
  before the precision step (the passes key includes it).

``apply`` is called only when the value is not the default. A spec names the Python module
(``space.modules``) whose import registers its dimensions; they are then searched with their
choices (or those ``space.dimensions`` gives). The driver ships the dimensions to the Ray
workers by value, so the module need not exist on the workers.

Example:
    >>> def scale_classifier(model, factor):
    ...     model.classifier.weight.data *= factor
    ...     return model
    >>> dim = register_dimension(Dimension(
    ...     name="classifier_scale", choices=(1.0, 0.5), stage="derive",
    ...     apply=scale_classifier, description="Scale the classifier's weights."))
    >>> DIMENSIONS.get("classifier_scale").default
    1.0
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, get_args

from paretoforge.exceptions import SpecError
from paretoforge.registry import Registry

__all__ = ["DIMENSIONS", "STAGES", "Dimension", "Stage", "load_dimension_modules",
           "register_dimension"]

Stage = Literal["derive", "export", "passes"]
STAGES: tuple[str, ...] = get_args(Stage)

_BUILTIN = ("layers_kept", "heads_kept", "ffn_kept", "precision", "fusion",
            "int4_accuracy_level", "custom")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PER_LAYER_PARAM = re.compile(rf"^({'|'.join(_BUILTIN)})_\d+$")
_UNSET: Any = object()


@dataclasses.dataclass(frozen=True)
class Dimension:
    """A search dimension of your own: what it is called, its choices, and what it does.

    Args:
        name: Lower-case identifier (``[a-z][a-z0-9_]*``), not a built-in dimension's.
        choices: Its values: JSON scalars (bool, int, float or str) of one kind, no repeats.
        stage: The pipeline stage at which ``apply`` acts: ``derive``, ``export`` or
            ``passes`` (see the module's docstring for each ``apply`` signature).
        apply: The transformation, called with the candidate's value when it is not
            ``default``.
        default: The value that leaves the candidate unchanged (default: the first choice);
            the unpruned base (trial 0) has it, and a config at it keeps its old key.
        description: One line for listings.

    Raises:
        SpecError: A field breaks its rule (the message names it and the fix).

    Example:
        >>> Dimension(name="noop", choices=("off", "on"), stage="passes",
        ...           apply=lambda src, dst, value: None).default
        'off'
    """

    name: str
    choices: tuple[Any, ...]
    stage: Stage
    apply: Callable[..., Any]
    default: Any = _UNSET
    description: str = ""
    module: str = ""  # the module that registered it (set by register_dimension)

    def __post_init__(self) -> None:
        where = f"dimension {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise SpecError(f"dimension name {self.name!r}: use 1-64 lower-case letters, digits "
                            "and '_', starting with a letter (e.g. 'attention_impl')")
        if self.name in _BUILTIN or _PER_LAYER_PARAM.match(self.name):
            raise SpecError(f"{where}: the name is a built-in dimension's (or one of its "
                            f"per-layer parameters); built-in: {', '.join(_BUILTIN)}; pick "
                            "another name")
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Iterable):
            raise SpecError(f"{where}: choices must be a list or tuple of values, got "
                            f"{self.choices!r}")
        choices = tuple(self.choices)
        object.__setattr__(self, "choices", choices)
        if len(choices) < 2:
            raise SpecError(f"{where}: needs at least two choices (a default and one other), "
                            f"got {list(choices)}")
        bad = [c for c in choices if not isinstance(c, (bool, int, float, str))]
        if bad:
            raise SpecError(f"{where}: choice {bad[0]!r} is a {type(bad[0]).__name__}; choices "
                            "are JSON scalars (bool, int, float or str)")
        kinds = {"bool" if isinstance(c, bool) else "number" if isinstance(c, (int, float))
                 else "str" for c in choices}
        if len(kinds) > 1:
            raise SpecError(f"{where}: choices {list(choices)} mix {' and '.join(sorted(kinds))}"
                            "; use values of one kind")
        if len(set(choices)) != len(choices):
            raise SpecError(f"{where}: choices {list(choices)} repeat a value")
        if self.stage not in STAGES:
            raise SpecError(f"{where}: stage {self.stage!r} is not one of {', '.join(STAGES)} "
                            "(derive: the PyTorch model after surgery; export: the model "
                            "before it is traced; passes: the fp32 ONNX graph)")
        if not callable(self.apply):
            raise SpecError(f"{where}: apply must be a function, got {self.apply!r}")
        if self.default is _UNSET:
            object.__setattr__(self, "default", choices[0])
        elif self.default not in choices or type(self.default) is not type(
                choices[choices.index(self.default)]):
            raise SpecError(f"{where}: default {self.default!r} is not one of its choices "
                            f"{list(choices)}")

    def same_as(self, other: Dimension) -> bool:
        """The same definition (name, choices, default, stage, module and function name)."""
        return (self.name, self.choices, self.default, self.stage, self.module,
                getattr(self.apply, "__qualname__", None)) == (
                other.name, other.choices, other.default, other.stage, other.module,
                getattr(other.apply, "__qualname__", None))

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickled in another process (a Ray worker that got it by value with the prepared
        # bundle), a dimension registers itself there, so the spec and configs that name it
        # validate and build.
        return (_shipped, (self.name, self.choices, self.stage, self.apply, self.default,
                           self.description, self.module))


DIMENSIONS: Registry[Dimension] = Registry("search dimension")


def register_dimension(dim: Dimension) -> Dimension:
    """Register ``dim`` (called at the top level of your module); returns it as registered.

    Raises:
        SpecError: a dimension of that name is registered already.
    """
    if not isinstance(dim, Dimension):
        raise SpecError(f"register_dimension takes a Dimension, got {dim!r}")
    if not dim.module:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        dim = dataclasses.replace(dim, module=str(caller))
    if dim.name in DIMENSIONS:
        old = DIMENSIONS.get(dim.name)
        raise SpecError(f"dimension {dim.name!r} is registered already (by module "
                        f"{old.module!r}); give yours another name")
    DIMENSIONS.add(dim.name, dim)
    return dim


def _shipped(name: str, choices: tuple[Any, ...], stage: Stage, apply: Callable[..., Any],
             default: Any, description: str, module: str) -> Dimension:
    dim = Dimension(name=name, choices=choices, stage=stage, apply=apply, default=default,
                    description=description, module=module)
    if name not in DIMENSIONS:
        DIMENSIONS.add(name, dim)
        return dim
    old = DIMENSIONS.get(name)
    if not old.same_as(dim):
        raise SpecError(f"dimension {name!r} arrived from module {module!r}, but another "
                        f"definition from {old.module!r} is registered in this process")
    return old


def load_dimension_modules(entries: Iterable[str]) -> list[Dimension]:
    """Import the modules ``entries`` name (once per process) and return the dimensions they
    registered.

    An entry is the path of a ``.py`` file (imported as a module named after the file) or
    the dotted name of an importable module. A module whose dimensions are registered here
    already (e.g. shipped to a Ray worker) is not imported again.

    Raises:
        SpecError: a module is missing, fails to import, clashes with another module's name,
            or registers no dimension.

    Example:
        >>> load_dimension_modules([])
        []
    """
    out: list[Dimension] = []
    for entry in entries:
        name = _load(entry)
        dims = [DIMENSIONS.get(n) for n in DIMENSIONS if DIMENSIONS.get(n).module == name]
        if not dims:
            raise SpecError(f"space.modules: {entry!r} registers no dimension; call "
                            "paretoforge.search_spaces.register_dimension(Dimension(...)) at "
                            "its top level")
        out.extend(dims)
    return out


def _load(entry: str) -> str:
    """Import ``entry`` unless it is loaded (or its dimensions arrived); its module name."""
    if not isinstance(entry, str) or not entry:
        raise SpecError(f"space.modules: {entry!r} is not a module file or name")
    is_file = entry.endswith(".py") or "/" in entry or "\\" in entry
    name = Path(entry).stem if is_file else entry
    if any(DIMENSIONS.get(n).module == name for n in DIMENSIONS):
        return name  # imported before, or its dimensions were shipped to this process
    if not is_file:
        try:
            importlib.import_module(entry)
        except Exception as e:
            raise SpecError(f"space.modules: cannot import {entry!r}: {type(e).__name__}: "
                            f"{e}; give an importable module or the path of a .py file") from None
        return name
    path = Path(entry).expanduser().resolve()
    if not path.is_file():
        raise SpecError(f"space.modules: {entry!r} is not a file; give the path of a .py file "
                        "(relative to the spec file) or an importable module name")
    if not name.isidentifier():
        raise SpecError(f"space.modules: {entry!r}: the file name must be a Python identifier "
                        "(it becomes the module's name), e.g. my_dims.py")
    loaded = sys.modules.get(name)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        if file and Path(file).resolve() == path:
            return name
        raise SpecError(f"space.modules: {entry!r} would be imported as {name!r}, which is "
                        f"another module ({file or 'built in'}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py file always has a loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SpecError:
        del sys.modules[name]
        raise
    except Exception as e:
        del sys.modules[name]
        raise SpecError(f"space.modules: importing {entry!r} failed: {type(e).__name__}: "
                        f"{e}") from None
    return name
