"""Plain name -> object registries filled by decorators.

An unknown name raises a `SemisegError` that lists the valid names and the
closest match, so configs never need dotted import paths.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterator, TypeVar

from .errors import SemisegError

T = TypeVar("T")


def closest(name: str, choices) -> str:
    """' (did you mean X?)' for the closest of `choices`, or ''."""
    match = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            valid = ", ".join(sorted(self._items))
            raise SemisegError(
                f"unknown {self.kind} '{name}'{closest(name, self._items)}; valid {self.kind}s: {valid}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


METHODS: Registry = Registry("method")
MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
