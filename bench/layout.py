"""The bench's own Redis readers use the layout the server recorded in ``ca:meta``, so the
raw baselines read and write exactly the keys the service does."""

from __future__ import annotations

from typing import Any

from consent_server.store import keys
from consent_server.store.schema import layout_of


def use_store_layout(sync_client: Any) -> None:
    """Configure this process's key layout from the store's ``ca:meta`` (legacy 16
    partitions when the store records none, as the server reads it)."""
    raw = sync_client.hgetall(keys.META)
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    partitions, spread = layout_of(meta)
    keys.configure(partitions, spread=spread)
