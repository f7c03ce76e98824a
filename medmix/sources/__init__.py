"""Registry of source adapters: every module in this package that defines a `Source` subclass.

Discovery by module scan (not a hand-kept list) so adding an adapter is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from medmix.core.errors import MedmixError
from medmix.sources.base import Bad, Manual, Record, Remote, Source, Unit

__all__ = ["Bad", "Manual", "Record", "Remote", "Source", "Unit", "registry", "get_source"]


@lru_cache(maxsize=1)
def registry() -> dict[str, type[Source]]:
    found: dict[str, type[Source]] = {}
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_") or mod.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for obj in vars(module).values():
            own = isinstance(obj, type) and obj.__module__ == module.__name__
            if own and issubclass(obj, Source) and obj is not Source:
                if obj.name in found:
                    raise MedmixError(f"two adapters are named {obj.name!r}: {found[obj.name].__module__} and "
                                      f"{module.__name__}")
                found[obj.name] = obj
    return dict(sorted(found.items()))


def get_source(name: str) -> type[Source]:
    reg = registry()
    if name not in reg:
        import difflib
        close = difflib.get_close_matches(name, reg, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MedmixError(f"unknown source {name!r}{hint} (`medmix sources` lists them)")
    return reg[name]
