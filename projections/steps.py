"""Lifecycle steps by event type, remembered: every event of every batch asks for its step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from events.mechanisms import Area, Mechanisms, Step


class Lifecycles(Protocol):
    """What the projections read of `Mechanisms`: the areas, and the step of a full type name."""

    @property
    def areas(self) -> Mapping[str, Area]: ...

    def step(self, event_type: str) -> Step | None: ...


class StepIndex:
    """`Mechanisms.step`, parsed once per type. The catalog has under a hundred types; the bound
    only guards against a stream of made-up ones."""

    __slots__ = ("_mechanisms", "_steps")
    _LIMIT = 4096

    def __init__(self, mechanisms: Mechanisms) -> None:
        self._mechanisms = mechanisms
        self._steps: dict[str, Step | None] = {}

    @property
    def areas(self) -> Mapping[str, Area]:
        return self._mechanisms.areas

    def step(self, event_type: str) -> Step | None:
        try:
            return self._steps[event_type]
        except KeyError:
            step = self._mechanisms.step(event_type)
            if len(self._steps) < self._LIMIT:
                self._steps[event_type] = step
            return step
