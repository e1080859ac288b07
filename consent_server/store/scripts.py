"""The Lua scripts in store/lua/, read from the installed package."""

from __future__ import annotations

import re
from importlib import resources

# Redis scripts cannot require one another: a line "--! include <name>.lua" is replaced
# by that file's source when the script is loaded (one level: included files include
# nothing), so a rule two scripts share is written once.
_INCLUDE = re.compile(r"^--! include ([a-z_]+\.lua)$", re.MULTILINE)


def _source(name: str) -> str:
    return (resources.files("consent_server.store") / "lua" / name).read_text()


def load_script(name: str) -> str:
    """The source of ``store/lua/<name>``, its includes pasted in (register it with
    ``client.register_script``)."""
    return _INCLUDE.sub(lambda m: _source(m.group(1)), _source(name))
