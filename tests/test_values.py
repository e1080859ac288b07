"""fast_init builds exactly what the dataclass's own __init__ builds, for every class
of the domain it decorates (found by walking the domain's modules)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import consent_server.domain as domain
from consent_server.domain.values import fast_init


def _decorated() -> list[type[Any]]:
    found: dict[str, type[Any]] = {}
    for info in pkgutil.iter_modules(domain.__path__):
        module = importlib.import_module(f"consent_server.domain.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            init = cls.__dict__.get("__init__")
            if (
                init is not None
                and hasattr(init, "__wrapped__")
                and cls.__module__ == module.__name__
            ):
                found[cls.__qualname__] = cls
    return list(found.values())


DECORATED = _decorated()


def test_the_hot_path_classes_are_decorated() -> None:
    names = {c.__name__ for c in DECORATED}
    assert {"Recipient", "ConsentEventInput", "Decision", "RawImportRecord"} <= names


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
@given(data=st.data())
def test_same_object_as_the_dataclass_init(cls: type[Any], data: st.DataObject) -> None:
    fields = dataclasses.fields(cls)
    values = [data.draw(st.one_of(st.none(), st.integers(), st.text(max_size=5))) for _ in fields]
    fast = cls(*values)
    reference = object.__new__(cls)
    cls.__init__.__wrapped__(reference, *values)
    assert fast == reference
    assert hash(fast) == hash(reference)
    assert repr(fast) == repr(reference)
    assert [getattr(fast, f.name) for f in fields] == values
    by_name = cls(**{f.name: v for f, v in zip(fields, values, strict=True)})
    assert by_name == reference


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_still_frozen_and_strict_about_arguments(cls: type[Any]) -> None:
    fields = dataclasses.fields(cls)
    obj = cls(*[None] * len(fields))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, fields[0].name, 1)
    with pytest.raises(TypeError):
        cls(*[None] * (len(fields) + 1))
    required = [f for f in fields if f.default is dataclasses.MISSING]
    if required:
        with pytest.raises(TypeError):
            cls(*[None] * (len(required) - 1))
    assert list(inspect.signature(cls).parameters) == [f.name for f in fields]


def test_defaults_are_the_dataclass_defaults() -> None:
    @fast_init
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithDefault:
        a: int
        b: str = "x"
        c: tuple[int, ...] = ()

    assert WithDefault(1) == WithDefault(1, "x", ())
    assert WithDefault(1, c=(2,)).c == (2,)


def test_refuses_what_it_cannot_reproduce() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class KwOnly:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived(Base):
        b: int

    for cls in (NoSlots, NotFrozen, Factory, PostInit, KwOnly, Derived, int):
        with pytest.raises(TypeError):
            fast_init(cls)
