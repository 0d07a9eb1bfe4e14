"""The JSON shapes the API answers with (CONTRACT.md "JSON shapes"), built from store rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from store.db import Row

# Columns kept to the service itself.
PRIVATE_COLUMNS = frozenset(
    {"stored_name", "live_seq", "start_time", "end_time", "event_count", "highlight_count"}
)


def timestamp(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, as the frontend parses it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{value.microsecond // 1000:03d}Z"
    )


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def document(row: Row, private: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {
        camel(name): timestamp(value) if isinstance(value, datetime) else value
        for name, value in row.items()
        if name not in private
    }


def match(row: Row) -> dict[str, Any]:
    return document(row, PRIVATE_COLUMNS)


def list_item(row: Row) -> dict[str, Any]:
    item = match(row)
    item["_count"] = {"events": row["event_count"], "highlights": row["highlight_count"]}
    return item


def detail(row: Row, results: dict[str, list[Row]]) -> dict[str, Any]:
    return {
        **match(row),
        "events": [document(event) for event in results["events"]],
        "highlights": [document(highlight) for highlight in results["highlights"]],
        "emotionScores": [document(score) for score in results["emotion_scores"]],
    }
