"""Live updates of a match's analysis, handed to the bus for every watcher."""

from __future__ import annotations

from typing import Any

from services.bus import LocalBus
from store.db import Database


class LiveUpdates:
    """The one seam through which callbacks and the dispatcher announce what happened."""

    def __init__(self, db: Database, bus: LocalBus) -> None:
        self.db = db
        self.bus = bus

    async def publish(self, match_id: str, event: str, payload: dict[str, Any]) -> None:
        await self.bus.publish(match_id, {"event": event, "data": payload})
