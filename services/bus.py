"""The live-update bus: carries each match's updates to every process's listeners."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]


class LocalBus:
    """In-process bus: publishing hands the message straight to this process's listeners."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, match_id: str, message: dict[str, Any]) -> None:
        for listener in self._listeners:
            listener(match_id, message)

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        self._listeners.clear()
