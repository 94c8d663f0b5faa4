"""Name -> class registries (checks, faults), filled by a class decorator, like Toxiproxy's toxics."""

from __future__ import annotations

from collections.abc import Callable


def registrar(table: dict[str, type], kind: str) -> Callable[[type], type]:
    """A class decorator adding a class to `table` under its `name` (a `kind` of thing, for errors)."""

    def register(cls: type) -> type:
        name = getattr(cls, "name", "")
        if not name:
            raise TypeError(f"{cls.__qualname__} has no `name`")
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} name {name!r} is already registered by {table[name].__qualname__}")
        table[name] = cls
        return cls

    return register
