"""What the inference engine's callbacks do: apply the contract's rules, store, announce.

Bodies reach here already checked against their JSON Schema (types are right); this module
clamps values into range, maps event types, and refuses callbacks for unknown matches (404)
or for a run that is no longer the match's current one (409). A callback accepted for the
current run proves that the engine has the run's job, so each also drops that job if it was
sent and is still queued: a hand-off that timed out but was taken is not sent again.
"""

from __future__ import annotations

from typing import Any

from services.live import LiveUpdates
from store import jobs, results
from store import matches as store_matches
from store.db import Database, Row

EVENT_TYPES = frozenset(
    [
        "GOAL",
        "FOUL",
        "TACKLE",
        "SAVE",
        "CELEBRATION",
        "HIGHLIGHT",
        "PENALTY",
        "RED_CARD",
        "YELLOW_CARD",
        "CORNER",
        "OFFSIDE",
    ]
)
LEGACY_EVENT_TYPES = {"CELEBRATE": "CELEBRATION"}
STAGE_MAX_CHARS = 200


class MatchNotFound(LookupError):
    """No match has that id."""


class StaleRun(Exception):
    """The callback names an analysis run that is not the match's current one."""


def event_type(name: str | None) -> str:
    """The contract's type for an engine's event name; unknown names become HIGHLIGHT."""
    key = (name or "").strip().upper()
    key = LEGACY_EVENT_TYPES.get(key, key)
    return key if key in EVENT_TYPES else "HIGHLIGHT"


def clamp(value: float | None, low: float, high: float) -> float:
    return min(max(value or 0.0, low), high)


def cut(text: str | None, length: int) -> str | None:
    return text[:length] if text is not None else None


def normalize_event(event: dict[str, Any]) -> dict[str, Any]:
    """A live or final event with the contract's type and ranges (other keys kept)."""
    return {
        **event,
        "type": event_type(event.get("type")),
        "confidence": clamp(event.get("confidence"), 0, 1),
        "finalScore": clamp(event.get("finalScore"), 0, 10),
    }


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    event = normalize_event(event)
    return {
        "timestamp": event["timestamp"],
        "type": event["type"],
        "confidence": event["confidence"],
        "final_score": event["finalScore"],
        "commentary": cut(event.get("commentary") or event.get("description"), 1000),
    }


def highlight_row(highlight: dict[str, Any]) -> dict[str, Any]:
    return {
        "start_time": highlight["startTime"],
        "end_time": highlight["endTime"],
        "score": clamp(highlight.get("score"), 0, 10),
        "event_type": cut(highlight.get("eventType"), 50),
        "commentary": cut(highlight.get("commentary"), 500),
        "video_url": highlight.get("videoUrl"),
    }


def emotion_row(score: dict[str, Any]) -> dict[str, Any]:
    return {
        "timestamp": score["timestamp"],
        "audio_score": clamp(score.get("audioScore"), 0, 1),
        "motion_score": clamp(score.get("motionScore"), 0, 1),
        "context_weight": clamp(score.get("contextWeight"), 0, 1),
        "final_score": clamp(score.get("finalScore"), 0, 10),
    }


# `complete` body keys stored on the match as they come (after the checks of its schema).
PLAIN_MATCH_FIELDS = {
    "highlightReelUrl": "highlight_reel_url",
    "trackingData": "tracking_data",
    "teamColors": "team_colors",
    "heatmapUrl": "heatmap_url",
    "thumbnailUrl": "thumbnail_url",
    "topSpeedKmh": "top_speed_kmh",
}


def match_values(body: dict[str, Any]) -> dict[str, Any]:
    """The match's columns that `complete` sets; those the body leaves out are emptied, so
    that a second, different `complete` leaves no mix of the two."""
    values: dict[str, Any] = {column: body.get(key) for key, column in PLAIN_MATCH_FIELDS.items()}
    duration = body.get("duration")
    values["duration"] = None if duration is None else max(duration, 0.0)
    values["summary"] = cut(body.get("summary"), 5000)
    if body.get("videoUrl"):
        values["upload_url"] = body["videoUrl"]
    return values


class Analysis:
    """Applies the engine's reports on a match's current analysis run."""

    def __init__(self, db: Database, live: LiveUpdates) -> None:
        self.db = db
        self.live = live

    async def progress(self, match_id: str, run: str | None, body: dict[str, Any]) -> bool:
        """Stores progress (or failure, for -1); False when ignored (the run has ended)."""
        stage = cut(body.get("stage"), STAGE_MAX_CHARS)
        if body["progress"] <= -1:
            return await self._failed_in_engine(match_id, run, stage)
        progress = round(clamp(body["progress"], 0, 100))
        async with self.db.connection() as conn:
            row = await results.set_progress(
                conn, match_id, run, progress, stage, keep=self.live.log_limit
            )
            if row is None:
                await self._check_run(conn, match_id, run)
                return False
        await self.live.broadcast(match_id, row["live_seq"], "progress", row["payload"])
        return True

    async def _failed_in_engine(self, match_id: str, run: str | None, stage: str | None) -> bool:
        reason = f"analysis failed in the inference engine{f' ({stage})' if stage else ''}"
        async with self.db.connection() as conn:
            if await results.set_failed(conn, match_id, run, reason) is None:
                await self._check_run(conn, match_id, run)
                return False
        update = {"matchId": match_id, "progress": -1}
        if stage is not None:
            update["stage"] = stage
        await self.live.publish(match_id, "progress", update)
        return True

    async def live_event(self, match_id: str, run: str | None, event: dict[str, Any]) -> None:
        async with self.db.connection() as conn:
            _current_run(await results.reported(conn, match_id, run), match_id, run)
        await self.live.publish(
            match_id, "matchEvent", {"matchId": match_id, "event": normalize_event(event)}
        )

    async def tracking_update(self, match_id: str, run: str | None, frames: list) -> None:
        async with self.db.connection() as conn:
            _current_run(await results.reported(conn, match_id, run), match_id, run)
        await self.live.publish(match_id, "trackingUpdate", {"matchId": match_id, "frames": frames})

    async def complete(self, match_id: str, run: str | None, body: dict[str, Any]) -> None:
        """Stores the final results in one transaction; sending them twice keeps one copy."""
        events_rows = [event_row(event) for event in body["events"]]
        highlight_rows = [highlight_row(item) for item in body.get("highlights") or []]
        emotion_rows = [emotion_row(item) for item in body.get("emotionScores") or []]
        async with self.db.transaction() as conn:
            current = await self._check_run(conn, match_id, run, lock=True)
            await results.replace_results(
                conn,
                match_id,
                events_rows=events_rows,
                highlight_rows=highlight_rows,
                emotion_rows=emotion_rows,
                match_values=match_values(body),
            )
            await jobs.end_dispatch(conn, match_id, current, named_run=run is not None)
        await self.live.publish(match_id, "progress", {"matchId": match_id, "progress": 100})
        await self.live.publish(
            match_id,
            "complete",
            {
                "matchId": match_id,
                "eventCount": len(events_rows),
                "highlightCount": len(highlight_rows),
            },
        )

    @staticmethod
    async def _check_run(conn, match_id: str, run: str | None, *, lock: bool = False) -> str:
        match = await store_matches.get_run_state(conn, match_id, lock=lock)
        return _current_run(match, match_id, run)


def _current_run(match: Row | None, match_id: str, run: str | None) -> str:
    """The match's current run, which the callback's `run` (if any) must be."""
    if match is None:
        raise MatchNotFound(match_id)
    if run is not None and run != match["analysis_id"]:
        raise StaleRun(run)
    return match["analysis_id"]
