"""Custom dimensions: validated like a preset, loaded from the user's module once, in the
config only when not at their default, and refused with a message that says the fix."""

from __future__ import annotations

import pickle
import sys
import textwrap
from pathlib import Path

import pytest

from paretoforge.exceptions import SpecError
from paretoforge.search_spaces import (
    DIMENSIONS,
    CandidateConfig,
    Dimension,
    SearchSpace,
    load_dimension_modules,
    register_dimension,
)
from paretoforge.spec import Spec
from paretoforge.testing import tiny_spec_dict


@pytest.fixture(autouse=True)
def restored():
    """Undo the registrations and module imports a test makes."""
    items, modules = dict(DIMENSIONS._items), set(sys.modules)
    yield
    DIMENSIONS._items.clear()
    DIMENSIONS._items.update(items)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def _noop(model, value):
    return model


@pytest.mark.parametrize(("kw", "match"), [
    ({"name": "Bad-Name"}, "lower-case letters"),
    ({"name": "heads_kept"}, "built-in dimension"),
    ({"name": "ffn_kept_3"}, "per-layer parameters"),
    ({"choices": ("on",)}, "at least two choices"),
    ({"choices": "ab"}, "list or tuple"),
    ({"choices": (1, "a")}, "mix number and str"),
    ({"choices": ((1,), (2,))}, "JSON scalars"),
    ({"choices": (1, 1)}, "repeat"),
    ({"stage": "measure"}, "stage 'measure' is not one of derive, export, passes"),
    ({"apply": 3}, "apply must be a function"),
    ({"default": "c"}, "default 'c' is not one of its choices"),
])
def test_bad_dimensions_are_refused(kw: dict, match: str) -> None:
    args = {"name": "my_dim", "choices": ("a", "b"), "stage": "derive", "apply": _noop, **kw}
    with pytest.raises(SpecError, match=match):
        Dimension(**args)


def test_registration_and_the_config() -> None:
    dim = register_dimension(Dimension(name="my_dim", choices=("a", "b"), stage="derive",
                                       apply=_noop))
    assert dim.default == "a" and dim.module == __name__
    with pytest.raises(SpecError, match="'my_dim' is registered already"):
        register_dimension(Dimension(name="my_dim", choices=(1, 2), stage="passes",
                                     apply=_noop))
    space = SearchSpace.from_preset("vit-prune", {"my_dim": ["a", "b"]})
    assert space.custom == ("my_dim",) and space.size() == 2 * 128
    base = space.base_params(4, 4)
    assert base["my_dim"] == "a"
    at_default = space.config_from_params(base)
    # at its default the dimension is not in the config: the key is the one it always had
    assert at_default.custom == () and at_default.key == CandidateConfig(
        layers_kept=4, heads_kept=4, ffn_kept=1.0, precision="fp32").key
    other = space.config_from_params({**base, "my_dim": "b"})
    assert other.custom_value("my_dim") == "b" and other.key != at_default.key
    assert other.model_dump(mode="json")["custom"] == {"my_dim": "b"}
    assert CandidateConfig.model_validate_json(other.model_dump_json()) == other
    # a pickled dimension (as shipped to a worker) comes back as the registered one
    assert pickle.loads(pickle.dumps(dim)) is DIMENSIONS.get("my_dim")
    with pytest.raises(SpecError, match="bad choice 'c'"):
        SearchSpace.from_preset("vit-prune", {"my_dim": ["a", "c"]})
    with pytest.raises(SpecError, match="must include the dimension's default 'a'"):
        SearchSpace.from_preset("vit-prune", {"my_dim": ["b"]})


def _module(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


DIMS_MODULE = """
    from paretoforge.search_spaces import Dimension, register_dimension

    def mark(model, value):
        model.config.marker = value
        return model

    register_dimension(Dimension(name="{name}", choices=(0, 1, 2), stage="derive",
                                 apply=mark, description="Marks the config."))
"""


def test_a_spec_loads_its_module_relative_to_the_spec_file(tmp_path: Path) -> None:
    _module(tmp_path, "sdims", DIMS_MODULE.format(name="sdim"))
    d = tiny_spec_dict()
    d["space"]["modules"] = ["sdims.py"]
    import yaml

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(d))
    spec = Spec.from_file(tmp_path / "spec.yaml")
    assert spec.space.modules == [str((tmp_path / "sdims.py").resolve())]
    assert spec.space.dimensions["sdim"] == [0, 1, 2]  # searched with its own choices
    assert spec.space.search_space().custom == ("sdim",)
    # validated again (a worker, a resume): not imported twice, same space
    again = Spec.from_dict(spec.model_dump(mode="json"))
    assert again.space.dimensions == spec.space.dimensions
    # the spec may narrow the choices
    d["space"]["dimensions"]["sdim"] = [0, 2]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(d))
    assert Spec.from_file(tmp_path / "spec.yaml").space.search_space().dimensions["sdim"] == (
        0, 2)


@pytest.mark.parametrize(("body", "entry", "match"), [
    (None, "missing.py", "is not a file"),
    (None, "no_such_module_xyz", "cannot import 'no_such_module_xyz'"),
    ("x = 1\n", "empty_dims.py", "registers no dimension"),
    ("raise RuntimeError('boom')\n", "boom_dims.py", "importing .* failed: RuntimeError: boom"),
    ("from paretoforge.search_spaces import Dimension\n"
     "Dimension(name='x', choices=(1,), stage='derive', apply=print)\n",
     "one_dims.py", "at least two choices"),
    (None, "json.py", "another module"),
])
def test_bad_modules_are_spec_errors(tmp_path: Path, body, entry: str, match: str) -> None:
    if body is not None:
        (tmp_path / entry).write_text(body)
    if entry == "json.py":
        (tmp_path / entry).write_text(DIMS_MODULE.format(name="jdim"))
    d = tiny_spec_dict()
    d["space"]["modules"] = [str(tmp_path / entry) if entry.endswith(".py") else entry]
    with pytest.raises(SpecError, match=match):
        Spec.from_dict(d)


def test_two_modules_registering_one_name(tmp_path: Path) -> None:
    a = _module(tmp_path, "adims", DIMS_MODULE.format(name="same"))
    b = _module(tmp_path, "bdims", DIMS_MODULE.format(name="same"))
    assert [x.name for x in load_dimension_modules([str(a)])] == ["same"]
    with pytest.raises(SpecError, match="'same' is registered already \\(by module 'adims'\\)"):
        load_dimension_modules([str(b)])
