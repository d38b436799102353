"""Name → object registries (losses, metrics, tasks), chosen by config as in OpenUnlearning."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from llmgen.errors import LlmgenError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of objects; an unknown name is a clear error listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Use as ``@registry.register("name")`` or ``registry.register("name", obj)``."""

        def add(o: T) -> T:
            if name in self._items and self._items[name] is not o:
                raise LlmgenError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise LlmgenError(f"unknown {self.kind} {name!r} (known: {known})")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
