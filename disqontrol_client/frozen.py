"""Immutable, hashable copies of parsed YAML, so a loaded Config is a value:
it can be compared on reload, hashed, and shared without defensive copies."""
from __future__ import annotations

from typing import Any, NoReturn


class FrozenDict(dict):  # a dict subclass so json.dumps and isinstance(dict) still work
    """A dict that refuses mutation and hashes by content."""

    __slots__ = ()

    def _readonly(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:  # pickling must not go through __setitem__
        return (FrozenDict, (dict(self),))


def deep_freeze(value: Any) -> Any:
    """Mappings become FrozenDicts and lists tuples, all the way down."""
    if isinstance(value, dict):
        return FrozenDict((k, deep_freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(deep_freeze(v) for v in value)
    return value
