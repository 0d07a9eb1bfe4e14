"""Signed inference callbacks: HMAC-SHA256 of "<timestamp>.<raw body>" keyed by a shared secret.

The sender adds two headers to each callback:

    X-Matcha-Timestamp: 1767225600                  (unix seconds)
    X-Matcha-Signature: sha256=<hex HMAC-SHA256 of b"1767225600." + raw body>

The receiver recomputes the HMAC over the exact bytes it received, compares in constant time,
and refuses timestamps more than five minutes away from its clock (so a captured request
cannot be replayed later).

This module uses the standard library only: the inference engine can copy or import it as is.
Run it to sign a body by hand:

    python -m services.signing --secret "$CALLBACK_SECRET" body.json            # the headers
    python -m services.signing --secret "$CALLBACK_SECRET" --curl URL body.json # a curl command
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import shlex
import sys
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Matcha-Timestamp"
SIGNATURE_HEADER = "X-Matcha-Signature"
SCHEME = "sha256="
TOLERANCE_SECONDS = 300


class InvalidSignature(ValueError):
    """The request is not signed, or not signed with the secret, or signed too long ago."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Matcha-Signature` value for a body sent at `timestamp`."""
    message = str(timestamp).encode() + b"." + body
    return SCHEME + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers to send with `body` (signed now, unless `timestamp` is given)."""
    if timestamp is None:
        timestamp = int(time.time())
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def check_timestamp(
    headers: Mapping[str, str], now: float | None = None, tolerance: float = TOLERANCE_SECONDS
) -> int:
    """The signed timestamp, if both headers are there and it is recent; else `InvalidSignature`.

    Needs no body, so a receiver can refuse a stale or unsigned request before reading it.
    `headers` is any mapping with case-insensitive lookup, such as Tornado's `HTTPHeaders`.
    """
    stamp = headers.get(TIMESTAMP_HEADER)
    if not stamp or not headers.get(SIGNATURE_HEADER):
        raise InvalidSignature(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers are required")
    # ASCII digits only (`isdigit` alone takes "²"), and few enough to be a time at all.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise InvalidSignature(f"{TIMESTAMP_HEADER}: expected unix seconds")
    if now is None:
        now = time.time()
    if abs(now - int(stamp)) > tolerance:
        raise InvalidSignature(f"{TIMESTAMP_HEADER}: more than {tolerance:g} s from server time")
    return int(stamp)


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> None:
    """Raises `InvalidSignature` (saying why) unless `headers` sign `body` with `secret`."""
    timestamp = check_timestamp(headers, now, tolerance)
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(headers[SIGNATURE_HEADER].encode(), expected.encode()):
        raise InvalidSignature(f"{SIGNATURE_HEADER}: does not match the body")


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.signing", description="Sign a callback body for the orchestrator."
    )
    parser.add_argument("--secret", required=True, help="the orchestrator's CALLBACK_SECRET")
    parser.add_argument("--curl", metavar="URL", help="print a curl command posting to URL")
    parser.add_argument("body", help="file holding the exact JSON body, or - for stdin")
    args = parser.parse_args(argv)
    if args.curl and args.body == "-":
        parser.error("--curl needs the body in a file, which curl then sends")
    if args.body == "-":
        body = sys.stdin.buffer.read()
    else:
        with open(args.body, "rb") as file:
            body = file.read()
    headers = sign(args.secret, body)
    if args.curl:
        parts = ["curl", "-X", "POST", "-H", "Content-Type: application/json"]
        for name, value in headers.items():
            parts += ["-H", f"{name}: {value}"]
        parts += ["--data-binary", f"@{args.body}", args.curl]
        print(shlex.join(parts))
    else:
        for name, value in headers.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
