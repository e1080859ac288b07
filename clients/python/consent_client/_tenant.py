"""Tenant-bound views: the client's methods with ``tenant_id`` filled in.

``client.for_tenant("acme")`` returns a view whose methods are the client's own, minus
their first argument; the view shares the client's channel and options. The descriptor
keeps each method's exact signature for type checkers (``ParamSpec`` + ``Concatenate``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from ._errors import client_validation_error

_P = ParamSpec("_P")
_R = TypeVar("_R")
_C = TypeVar("_C")


def checked_tenant(tenant: object, what: str = "tenant") -> str:
    """``tenant`` if it is a usable tenant id; else a ClientValidationError."""
    if not isinstance(tenant, str) or not tenant.strip():
        raise client_validation_error(
            f"{what} is required: pass the tenant id (e.g. client.for_tenant('acme'))",
            "tenant_id",
        )
    return tenant


class TenantBound(Generic[_C]):
    """The state a view holds: its client and tenant."""

    def __init__(self, client: _C, tenant: str) -> None:
        self.client = client
        """The underlying client: call it with an explicit ``tenant_id`` for another tenant."""
        self.tenant = checked_tenant(tenant)
        """The tenant every call of this view is made for."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tenant={self.tenant!r})"


class WithTenant(Generic[_C, _P, _R]):
    """A view method: ``view.m(*a, **k)`` is ``view.client.m(view.tenant, *a, **k)``."""

    def __init__(self, method: Callable[Concatenate[_C, str, _P], _R]) -> None:
        self._method = method

    @overload
    def __get__(self, view: None, owner: type[Any]) -> WithTenant[_C, _P, _R]: ...

    @overload
    def __get__(self, view: TenantBound[_C], owner: type[Any]) -> Callable[_P, _R]: ...

    def __get__(
        self, view: TenantBound[_C] | None, owner: type[Any]
    ) -> WithTenant[_C, _P, _R] | Callable[_P, _R]:
        if view is None:
            return self
        bound = functools.partial(self._method, view.client, view.tenant)
        return cast(Callable[_P, _R], functools.update_wrapper(bound, self._method))
