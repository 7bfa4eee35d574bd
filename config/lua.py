"""Redis Lua scripts, kept as ``.lua`` files in a ``lua/`` folder beside the module that runs them.

A script's header comment says its KEYS, ARGV and reply. Job states in them are the values of
:class:`config.states.JobState` (tests/unit/test_lua.py reads every script and checks it).
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def lua_script(package: str, name: str) -> str:
    """The text of ``<package>/lua/<name>.lua`` (installed with the package's data)."""
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
