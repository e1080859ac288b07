"""A faster ``__init__`` for the frozen, slotted dataclasses built per record or per call.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (its own ``__setattr__`` raises), about 0.2 us a field on
CPython 3.11: a 9-field ConsentEventInput cost ~1.8 us to build, and an import builds
several such objects per record. ``fast_init`` replaces that ``__init__`` with one that
stores each field through its slot's descriptor directly (about half the cost). The
class is otherwise the dataclass it was: same fields, defaults, order, equality, hash,
repr, and assignment still raises ``FrozenInstanceError``. tests/test_values.py checks
this for every class it decorates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give a frozen ``slots=True`` dataclass the faster ``__init__`` (see the module).

    Refuses (TypeError) a class it cannot reproduce exactly: not a frozen slotted
    dataclass, or one with ``__post_init__``, inherited, init-only, keyword-only,
    ``init=False`` or default-factory fields."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init: {cls.__name__} is not a frozen slots=True dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"fast_init: {cls.__name__} has __post_init__")
    fields = dataclasses.fields(cast(Any, cls))
    namespace: dict[str, Any] = {}
    params_src: list[str] = []
    body: list[str] = []
    for n, f in enumerate(fields):
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"fast_init: {cls.__name__}.{f.name} is not a plain field")
        if f.default is dataclasses.MISSING:
            params_src.append(f.name)
        else:
            namespace[f"_default{n}"] = f.default
            params_src.append(f"{f.name}=_default{n}")
        slot = cls.__dict__.get(f.name)
        if slot is None:  # declared by a base class: its slot is the base's
            raise TypeError(f"fast_init: {cls.__name__}.{f.name} is inherited")
        namespace[f"_set{n}"] = slot.__set__  # the slot's member descriptor
        body.append(f"    _set{n}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params_src)}):\n" + ("\n".join(body) or "    pass")
    exec(source, namespace)  # noqa: S102 - built from the class's own field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__wrapped__ = cls.__dict__["__init__"]  # the dataclass's own: the reference in tests
    setattr(cls, "__init__", init)  # noqa: B010 - mypy forbids assigning a method
    return cls
