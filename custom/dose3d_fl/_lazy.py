"""Re-exports that import their module on first use (PEP 562 module ``__getattr__``).

The sub-packages of ``fl/`` re-export their public names this way. NVFlare imports single modules of them
in processes that must not load torch yet (the simulator configures its logging, which names the server
workflow's round-line filter, before torch may be loaded there), and an ``__init__.py`` that imported every
module eagerly would load torch with the first of them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, list[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, which re-exports ``{module: [names]}``.

    Example, in ``pkg/__init__.py``::

        __getattr__, __dir__, __all__ = lazy_exports(__name__, {"config": ["SiteConfig"]})
    """
    where = {name: module for module, names in exports.items() for name in names}

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    def dir_() -> list[str]:
        return sorted(where)

    return getattr_, dir_, sorted(where)
