"""Every public definition of exectrack.producer and exectrack.consumer has a docstring.

Public: a name that does not start with ``_``, in any module of the two packages
(``_private`` modules too: ``exectrack.producer.events`` re-exports their names).
Checked: module-level functions and classes defined in that module (not
imported into it, not an alias), and the methods, properties, classmethods
and staticmethods of those classes written in the class body. Left out: dunder
methods, what pydantic and dataclasses generate (fields, ``model_*`` hooks,
settings sources), and click commands (their docstring is their ``--help``
text, which is CLI behaviour). A method that overrides a documented method of a
base class inherits its docstring (as ``inspect.getdoc`` and Sphinx autodoc do).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import click
from pydantic import BaseModel

PACKAGES = ("exectrack.producer", "exectrack.consumer")


def modules() -> Iterator[ModuleType]:
    """The packages and every module under them, imported."""
    for name in PACKAGES:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            yield importlib.import_module(info.name)


def is_public(name: str) -> bool:
    return not name.startswith("_")


def generated(cls: type) -> set[str]:
    """Names that pydantic or dataclasses put on ``cls`` (not written by us)."""
    names: set[str] = set()
    if issubclass(cls, BaseModel):
        names |= set(dir(BaseModel)) | set(cls.model_fields)
    if dataclasses.is_dataclass(cls):
        names |= {field.name for field in dataclasses.fields(cls)}
    return names


def is_function(obj: object) -> bool:
    """A function, also behind ``functools.cache``/``wraps`` decorators (which copy ``__doc__``)."""
    return inspect.isfunction(obj) or (callable(obj) and inspect.isfunction(inspect.unwrap(obj)))


def method_of(member: object) -> object | None:
    """The function behind a class member (None: a member that is not a method)."""
    if isinstance(member, staticmethod | classmethod):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    if isinstance(member, functools.cached_property):
        return member.func
    return member if is_function(member) else None


def documented_member(cls: type, name: str, member: object) -> bool | None:
    """Whether a class member has a docstring (None: not a method-like member)."""
    function = method_of(member)
    if function is None:
        return None
    if getattr(function, "__doc__", None):
        return True
    for base in cls.__mro__[1:]:  # an override inherits the documented contract
        inherited = method_of(base.__dict__.get(name))
        if base is not object and inherited is not None and inherited.__doc__:
            return True
    return False


def class_documented(cls: type) -> bool:
    """Whether ``cls`` has its own docstring (not the signature dataclasses write in its place)."""
    doc = cls.__dict__.get("__doc__")
    if dataclasses.is_dataclass(cls) and doc and doc.startswith(f"{cls.__name__}("):
        return False
    return bool(doc)


def definitions(module: ModuleType) -> Iterator[tuple[str, bool]]:
    """The public definitions of ``module``: (qualified name, has a docstring)."""
    for name, obj in vars(module).items():
        if not is_public(name) or getattr(obj, "__module__", None) != module.__name__:
            continue  # private, or imported from elsewhere
        if getattr(obj, "__name__", name) != name or isinstance(obj, click.Command):
            continue  # an alias (``T = EventType``), or a command (its docstring is its --help)
        if is_function(obj):
            yield f"{module.__name__}.{name}", bool(obj.__doc__)
        elif inspect.isclass(obj):
            yield f"{module.__name__}.{name}", class_documented(obj)
            skip = generated(obj)
            for attr, member in vars(obj).items():
                if is_public(attr) and attr not in skip:
                    documented = documented_member(obj, attr, member)
                    if documented is not None:
                        yield f"{module.__name__}.{name}.{attr}", documented


def undocumented(module: ModuleType) -> list[str]:
    """Qualified names of the public definitions of ``module`` without a docstring."""
    return [qualname for qualname, documented in definitions(module) if not documented]


def test_every_public_definition_has_a_docstring() -> None:
    found = [definition for module in modules() for definition in definitions(module)]
    offenders = [qualname for qualname, documented in found if not documented]
    assert len(found) > 300  # the walk reaches both packages
    assert not offenders, (
        f"{len(offenders)} of {len(found)} public definitions without a docstring:\n"
        + "\n".join(offenders)
    )


def test_the_checker_sees_a_missing_docstring() -> None:
    """The walk finds definitions, and flags one without a docstring."""
    module = ModuleType("exectrack.producer.fake")

    def visible() -> None:
        pass

    @functools.cache
    def cached() -> None:
        pass

    class Visible:
        def method(self) -> None:
            pass

        @property
        def prop(self) -> int:
            return 1

    class Documented:
        """A docstring."""

        def method(self) -> None:
            """A docstring."""

    for obj in (visible, cached, Visible, Documented):
        obj.__module__ = module.__name__
        setattr(module, obj.__name__, obj)

    @dataclasses.dataclass
    class Data:
        field: int = 0

    Data.__module__ = module.__name__
    module.Data = Data  # type: ignore[attr-defined]
    module.Alias = Visible  # type: ignore[attr-defined]
    assert sorted(undocumented(module)) == [
        "exectrack.producer.fake.Data",
        "exectrack.producer.fake.Visible",
        "exectrack.producer.fake.Visible.method",
        "exectrack.producer.fake.Visible.prop",
        "exectrack.producer.fake.cached",
        "exectrack.producer.fake.visible",
    ]
    assert len(list(definitions(module))) == 8
