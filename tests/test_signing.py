"""Signed callbacks: with CALLBACK_SECRET set, only callbacks signed with it are applied."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services import signing
from tests.conftest import assert_error
from tests.queries import match_row

SECRET = "s3cret-shared-with-the-engine"
ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.config(CALLBACK_SECRET=SECRET)


def test_sign_then_verify_round_trip():
    """Guards against the two halves disagreeing on the signed message's format."""
    body = b'{"progress": 40}'
    headers = signing.sign(SECRET, body, timestamp=1_767_225_600)
    assert headers["X-Matcha-Timestamp"] == "1767225600"
    assert headers["X-Matcha-Signature"].startswith("sha256=")
    signing.verify(SECRET, body, headers, now=1_767_225_600 + 299)


def test_signature_is_hmac_of_timestamp_dot_body():
    """The engine implements the same format independently: it must be exactly this."""
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signing.sign("k", b"{}", 1_700_000_000)["X-Matcha-Signature"] == f"sha256={expected}"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "headers are required"),
        ({"X-Matcha-Timestamp": "1767225600"}, "headers are required"),
        ({"X-Matcha-Timestamp": "soon", "X-Matcha-Signature": "sha256=00"}, "unix seconds"),
        ({"X-Matcha-Timestamp": "\u00b2", "X-Matcha-Signature": "sha256=00"}, "unix seconds"),
        ({"X-Matcha-Timestamp": "9" * 5000, "X-Matcha-Signature": "sha256=00"}, "unix seconds"),
        ({"X-Matcha-Timestamp": "1767225000", "X-Matcha-Signature": "sha256=00"}, "from server"),
        ({"X-Matcha-Timestamp": "1767225600", "X-Matcha-Signature": "sha256=00"}, "not match"),
    ],
)
def test_verify_says_why_it_refuses(headers, reason):
    with pytest.raises(signing.InvalidSignature, match=reason):
        signing.verify(SECRET, b"{}", headers, now=1_767_225_600)


@pytest.mark.gen_test
async def test_valid_signature_is_applied(api, create_match, db):
    match = await create_match()
    body = json.dumps({"progress": 40, "stage": "detecting"}).encode()
    response = await api.post(
        f"/matches/{match['id']}/progress", body=body, headers=signing.sign(SECRET, body)
    )
    assert response.code == 201
    assert (await match_row(db, match["id"]))["progress"] == 40


@pytest.mark.gen_test
async def test_missing_signature_is_refused(api, create_match, db):
    """Guards against today's unsigned engine writing once a secret is configured."""
    match = await create_match()
    response = await api.post(f"/matches/{match['id']}/progress", {"progress": 40})
    assert_error(response, 401, "X-Matcha-Timestamp and X-Matcha-Signature headers are required")
    assert (await match_row(db, match["id"]))["progress"] == 0


@pytest.mark.gen_test
async def test_wrong_secret_is_refused(api, create_match, db):
    match = await create_match()
    body = json.dumps({"events": [{"timestamp": 1, "type": "GOAL"}]}).encode()
    response = await api.post(
        f"/matches/{match['id']}/complete",
        body=body,
        headers=signing.sign("not-the-secret", body),
    )
    assert_error(response, 401, "does not match")
    assert (await match_row(db, match["id"]))["status"] != "COMPLETED"


@pytest.mark.gen_test
async def test_old_timestamp_is_refused(api, create_match, db):
    """A captured request replayed ten minutes later must not be applied."""
    match = await create_match()
    body = b'{"progress": 40}'
    headers = signing.sign(SECRET, body, timestamp=int(time.time()) - 600)
    response = await api.post(f"/matches/{match['id']}/progress", body=body, headers=headers)
    assert_error(response, 401, "from server time")
    assert (await match_row(db, match["id"]))["progress"] == 0


@pytest.mark.gen_test
async def test_signature_replayed_on_another_match_is_refused(api, create_match, db):
    """A valid signature copied onto another match's URL with another body is worthless."""
    first, second = await create_match(), await create_match()
    body = json.dumps({"events": [{"timestamp": 1, "type": "GOAL"}]}).encode()
    headers = signing.sign(SECRET, body)
    response = await api.post(f"/matches/{first['id']}/complete", body=body, headers=headers)
    assert response.code == 201

    forged = json.dumps({"events": [], "summary": "forged"}).encode()
    response = await api.post(f"/matches/{second['id']}/complete", body=forged, headers=headers)
    assert_error(response, 401, "does not match")
    second_row = await match_row(db, second["id"])
    assert second_row["status"] != "COMPLETED"
    assert second_row["summary"] is None


@pytest.mark.gen_test
async def test_signed_body_naming_its_run_cannot_be_replayed_on_another_match(
    api, create_match, db
):
    """Guards the README's advice: with `analysis_id` in the signed body, the very same
    request replayed on another match's URL names a run that is not that match's."""
    first, second = await create_match(), await create_match()
    body = json.dumps({"progress": -1, "analysis_id": first["analysis_id"]}).encode()
    headers = signing.sign(SECRET, body)
    response = await api.post(f"/matches/{first['id']}/progress", body=body, headers=headers)
    assert response.code == 201
    response = await api.post(f"/matches/{second['id']}/progress", body=body, headers=headers)
    assert_error(response, 409, "analysis_id")
    assert (await match_row(db, second["id"]))["status"] != "FAILED"


def test_command_line_signs_with_the_standard_library_only(tmp_path):
    """The engine runs the helper without this service's packages: `-I -S` hides them."""
    body_file = tmp_path / "body.json"
    body_file.write_bytes(b'{"progress": 7}')
    script = ROOT / "services" / "signing.py"
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "--secret", SECRET, str(body_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    headers = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    signing.verify(SECRET, b'{"progress": 7}', headers)


def test_command_line_prints_a_curl_command(tmp_path):
    body_file = tmp_path / "body.json"
    body_file.write_bytes(b"{}")
    url = "http://localhost:4000/matches/x/progress"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.signing",
            "--secret",
            SECRET,
            "--curl",
            url,
            str(body_file),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout.startswith("curl -X POST")
    assert "-H 'X-Matcha-Signature: sha256=" in result.stdout
    assert f"--data-binary @{body_file}" in result.stdout
