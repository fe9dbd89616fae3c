"""Package attributes that import their module on first use (PEP 562).

``geoscreen.imagery`` and ``geoscreen.sites`` re-export names whose modules pull in
rasterio or geopandas; the CLI's help and store commands must not pay for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, namespace: dict[str, Any], where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: name -> submodule in ``where``;
    a loaded name is cached in the package's ``namespace`` (its ``globals()``)."""

    def getattr_(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted([*namespace, *where])

    return getattr_, dir_
