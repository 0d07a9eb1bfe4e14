"""The JSON shapes the API answers with (CONTRACT.md "JSON shapes"), built from store rows."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import orjson

from store.db import Row

# Columns kept to the service itself.
PRIVATE_COLUMNS = frozenset(
    {
        "stored_name",
        "source_url",
        "live_seq",
        "start_time",
        "end_time",
        "event_count",
        "highlight_count",
    }
)


def timestamp(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, as the frontend parses it."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.cache
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
    """A match with its results; `tracking_data` comes as JSON text and goes out as is."""
    tracking = row["tracking_data"]
    return {
        **match(row),
        "trackingData": orjson.Fragment(tracking) if tracking is not None else None,
        "events": [document(event) for event in results["events"]],
        "highlights": [document(highlight) for highlight in results["highlights"]],
        "emotionScores": [document(score) for score in results["emotion_scores"]],
    }
