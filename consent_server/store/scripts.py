"""The Lua scripts in store/lua/, read from the installed package."""

from __future__ import annotations

from importlib import resources


def load_script(name: str) -> str:
    """The source of ``store/lua/<name>`` (register it with ``client.register_script``)."""
    return (resources.files("consent_server.store") / "lua" / name).read_text()
