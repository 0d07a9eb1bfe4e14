"""JSON Schemas of the bodies this service accepts, and a validator that names the bad field.

Each `<name>.json` beside this file is one schema; `validate("progress", body)` checks a
parsed body against `progress.json` and raises `InvalidBody` with a message such as
`events[3].confidence: expected number`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

HERE = Path(__file__).parent

# Messages for the keywords whose jsonschema wording repeats the whole value.
BOUNDS = {
    "maxLength": "expected at most {} characters",
    "minLength": "expected at least {} characters",
    "maxItems": "expected at most {} items",
    "minItems": "expected at least {} items",
    "minimum": "expected a number >= {}",
    "maximum": "expected a number <= {}",
    "exclusiveMinimum": "expected a number > {}",
    "exclusiveMaximum": "expected a number < {}",
}
MESSAGE_MAX_CHARS = 200


class InvalidBody(ValueError):
    """A body that does not match its schema; the message names the field path."""


@functools.cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((HERE / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(name: str, document: Any) -> None:
    error = best_match(validator(name).iter_errors(document))
    if error is not None:
        raise InvalidBody(describe(error))


def nul_character_path(document: Any, path: tuple = ()) -> str | None:
    """The path of the first string (or key) holding a NUL character, which PostgreSQL can
    store neither in text nor in JSONB; None if there is none."""
    if isinstance(document, str):
        return field_path(list(path)) if "\0" in document else None
    if isinstance(document, dict):
        items = document.items()
    elif isinstance(document, list):
        items = enumerate(document)
    else:
        return None
    for key, value in items:
        if isinstance(key, str) and "\0" in key:
            return field_path([*path, key.replace("\0", "\\u0000")])
        found = nul_character_path(value, (*path, key))
        if found is not None:
            return found
    return None


def describe(error: ValidationError) -> str:
    """`path: what was expected`, e.g. `events[3].timestamp: required`."""
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(name for name in error.validator_value if name not in error.instance)
        return f"{field_path([*path, missing])}: required"
    if error.validator == "type":
        expected = error.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{field_path(path)}: expected {wanted}"
    if error.validator == "enum":
        choices = ", ".join(json.dumps(choice) for choice in error.validator_value)
        return f"{field_path(path)}: expected one of {choices}"
    if error.validator in BOUNDS:
        return f"{field_path(path)}: {BOUNDS[error.validator].format(error.validator_value)}"
    if error.validator == "pattern":
        return f"{field_path(path)}: must match {error.validator_value}"
    # jsonschema's own wording quotes the value, which may be megabytes long.
    message = error.message
    if len(message) > MESSAGE_MAX_CHARS:
        message = message[:MESSAGE_MAX_CHARS] + "..."
    return f"{field_path(path)}: {message}"


def field_path(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"
