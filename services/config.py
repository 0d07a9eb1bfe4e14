"""Settings: each declared once with its default and help line, read from the environment.

`load_config(os.environ)` returns a frozen `Config` or raises `ConfigError` with one line
naming the bad variable. `SETTINGS` is also what the README's configuration table lists.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping

import psycopg2.extensions


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


def _number(kind: type, text: str, low: float, high: float, expected: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValueError(f"expected {expected}")
    return value


def _port(text: str) -> int:
    return _number(int, text, 0, 65535, "a port number 0..65535")


def _positive_int(text: str) -> int:
    return _number(int, text, 1, float("inf"), "a whole number of at least 1")


def _non_negative_float(text: str) -> float:
    return _number(float, text, 0, float("inf"), "a number of at least 0")


def _positive_float(text: str) -> float:
    value = _number(float, text, 0, float("inf"), "a number above 0")
    if value == 0:
        raise ValueError("expected a number above 0")
    return value


def _bytes(text: str) -> int:
    """A size in bytes: `5368709120`, `100MB` (powers of 1000) or `5GiB` (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([KMGT])(i?)B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError("expected a size such as 104857600, 100MB or 5GiB")
    number, unit, binary = match.groups()
    if not unit:
        return int(number)
    return int(number) * (1024 if binary else 1000) ** ("KMGT".index(unit.upper()) + 1)


def _log_level(text: str) -> str:
    level = text.upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def _origins(text: str) -> tuple[str, ...]:
    return tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())


def _text(text: str) -> str:
    return text.strip()


def _url(*schemes: str) -> Callable[[str], str]:
    """A URL with one of `schemes` and a host (or empty, where empty has a meaning)."""
    expected = " or ".join(f"{scheme}://" for scheme in schemes)

    def parse(text: str) -> str:
        url = text.strip()
        if url:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in schemes or not (parts.netloc or parts.path):
                raise ValueError(f"expected a URL starting with {expected}")
        return url

    return parse


def _database_url(text: str) -> str:
    """A libpq URI or key=value string, as psycopg2 would read it (or empty)."""
    url = text.strip()
    if url:
        try:
            psycopg2.extensions.parse_dsn(url)
        except psycopg2.ProgrammingError:
            raise ValueError(
                "expected a PostgreSQL URL such as postgresql://user@host/db"
            ) from None
    return url


@dataclasses.dataclass(frozen=True)
class Setting:
    env: str
    default: str
    parse: Callable[[str], object]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("PORT", "4000", _port, "HTTP, WebSocket and Socket.IO port"),
    Setting("HOST", "0.0.0.0", _text, "address to listen on"),
    Setting(
        "DATABASE_URL",
        "",
        _database_url,
        "PostgreSQL URL; empty starts an embedded PostgreSQL in DATA_DIR",
    ),
    Setting(
        "REDIS_URL",
        "",
        _url("redis", "rediss", "unix"),
        "Redis URL for the live-update bus; empty uses an in-process bus (one process only)",
    ),
    Setting(
        "INFERENCE_URL",
        "http://localhost:8000",
        _url("http", "https"),
        "base URL of the inference engine",
    ),
    Setting("UPLOAD_DIR", "static/uploads", _text, "where videos and inference outputs are stored"),
    Setting("DATA_DIR", "data", _text, "where the embedded PostgreSQL keeps its files"),
    Setting("MAX_UPLOAD_BYTES", "5GiB", _bytes, "largest accepted video upload"),
    Setting("MAX_COMPLETE_BYTES", "100MB", _bytes, "largest accepted `complete` callback body"),
    Setting(
        "CORS_ORIGIN",
        "",
        _origins,
        "comma-separated allowed browser origins; empty allows any http://localhost:<port> "
        "and http://127.0.0.1:<port>",
    ),
    Setting(
        "CALLBACK_SECRET",
        "",
        _text,
        "HMAC key the inference engine signs callbacks with; empty accepts unsigned callbacks",
    ),
    Setting(
        "DISPATCH_MAX_ATTEMPTS",
        "5",
        _positive_int,
        "hand-off attempts before a match is marked FAILED",
    ),
    Setting(
        "DISPATCH_MAX_SECONDS",
        "120",
        _non_negative_float,
        "longest time spent retrying one hand-off before a match is marked FAILED",
    ),
    Setting(
        "DISPATCH_BACKOFF_SECONDS",
        "2",
        _non_negative_float,
        "first retry delay; doubles each attempt, with jitter",
    ),
    Setting(
        "DISPATCH_TIMEOUT_SECONDS",
        "10",
        _positive_float,
        "how long one hand-off request to the inference engine may take",
    ),
    Setting(
        "DISPATCH_LEASE_SECONDS",
        "40",
        _non_negative_float,
        "how long a job being handed over is reserved for its process; longer than "
        "DISPATCH_TIMEOUT_SECONDS. A job whose process died is sent again after this",
    ),
    Setting(
        "DISPATCH_POLL_SECONDS",
        "5",
        _positive_float,
        "how often the dispatcher looks for due jobs when no notification wakes it",
    ),
    Setting(
        "SHUTDOWN_GRACE_SECONDS",
        "10",
        _non_negative_float,
        "how long in-flight requests may run after SIGTERM",
    ),
    Setting(
        "BODY_IDLE_SECONDS",
        "60",
        _positive_float,
        "how long a request body (an upload, say) may stall, no byte arriving, before the "
        "connection is closed",
    ),
    Setting("DB_POOL_SIZE", "10", _positive_int, "PostgreSQL connections per process"),
    Setting("LOG_LEVEL", "INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
)


@dataclasses.dataclass(frozen=True)
class Config:
    port: int
    host: str
    database_url: str
    redis_url: str
    inference_url: str
    upload_dir: str
    data_dir: str
    max_upload_bytes: int
    max_complete_bytes: int
    cors_origin: tuple[str, ...]
    callback_secret: str
    dispatch_max_attempts: int
    dispatch_max_seconds: float
    dispatch_backoff_seconds: float
    dispatch_timeout_seconds: float
    dispatch_lease_seconds: float
    dispatch_poll_seconds: float
    shutdown_grace_seconds: float
    body_idle_seconds: float
    db_pool_size: int
    log_level: str

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)


def load_config(env: Mapping[str, str]) -> Config:
    values = {}
    for setting in SETTINGS:
        raw = env.get(setting.env, setting.default)
        try:
            values[setting.env.lower()] = setting.parse(raw)
        except ValueError as error:
            raise ConfigError(f"{setting.env}={raw!r}: {error}") from None
    values["inference_url"] = values["inference_url"].rstrip("/")
    if values["dispatch_lease_seconds"] <= values["dispatch_timeout_seconds"]:
        raise ConfigError(
            "DISPATCH_LEASE_SECONDS: must be longer than DISPATCH_TIMEOUT_SECONDS, or a slow "
            "hand-off could be sent twice"
        )
    return Config(**values)
