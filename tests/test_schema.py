"""The JSON Schemas of accepted bodies, and the messages that name what was wrong."""

import pytest

import schema


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("complete", {"events": [{}]}, "events[0].timestamp: required"),
        ("complete", {"events": [], "duration": 1e308}, "duration: expected a number <= "),
        ("complete", {"events": [], "topSpeedKmh": -3}, "topSpeedKmh: expected a number >= 0"),
        ("complete", {"events": [], "teamColors": [{"r": 1}]}, "teamColors[0]: expected array"),
        ("complete", {"events": [], "trackingData": ["x"]}, "trackingData[0]: expected object"),
        ("progress", {"progress": -2}, "progress: expected a number >= -1"),
        ("url_intake", {"url": "ftp://x"}, "url: must match ^https?://"),
    ],
)
def test_refusals_name_the_field_and_the_rule(name, body, message):
    with pytest.raises(schema.InvalidBody) as refused:
        schema.validate(name, body)
    assert str(refused.value).startswith(message), str(refused.value)


def test_a_long_value_is_not_repeated_in_the_message():
    """Guards the answer and the log against echoing a field of megabytes back."""
    with pytest.raises(schema.InvalidBody) as refused:
        schema.validate("ws_message", {"type": "x" * 1_000_000, "matchId": "m"})
    assert len(str(refused.value)) < 300
