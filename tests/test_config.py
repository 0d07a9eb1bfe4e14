"""Settings come from the environment; a wrong one stops the start with one clear line."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

import store.db
from services.config import SETTINGS, ConfigError, load_config
from store import migrate
from store.db import CONNECT_TIMEOUT, DatabaseUnavailable, with_connect_timeout

ROOT = Path(__file__).parent.parent


def test_defaults_match_the_contract():
    config = load_config({})
    assert (config.port, config.upload_dir, config.inference_url) == (
        4000,
        "static/uploads",
        "http://localhost:8000",
    )
    assert config.max_upload_bytes == 5 * 1024**3
    assert config.max_complete_bytes == 100 * 1000**2
    assert (config.database_url, config.redis_url, config.cors_origin) == ("", "", ())


def test_environment_overrides():
    config = load_config(
        {
            "PORT": "8080",
            "MAX_UPLOAD_BYTES": "10MiB",
            "INFERENCE_URL": "http://engine:8000/",
            "CORS_ORIGIN": "https://app.example, https://m.example/",
            "LOG_LEVEL": "debug",
        }
    )
    assert (config.port, config.max_upload_bytes, config.inference_url) == (
        8080,
        10 * 1024**2,
        "http://engine:8000",
    )
    assert config.cors_origin == ("https://app.example", "https://m.example")
    assert config.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAX_UPLOAD_BYTES": "lots"}, "MAX_UPLOAD_BYTES"),
        ({"DISPATCH_MAX_ATTEMPTS": "0"}, "DISPATCH_MAX_ATTEMPTS"),
        ({"DISPATCH_LEASE_SECONDS": "10"}, "DISPATCH_LEASE_SECONDS: must be longer than"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"DATABASE_URL": "nonsense"}, "DATABASE_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"INFERENCE_URL": "engine:8000"}, "INFERENCE_URL"),
        ({"DISPATCH_TIMEOUT_SECONDS": "0"}, "DISPATCH_TIMEOUT_SECONDS"),
        ({"DISPATCH_POLL_SECONDS": "0"}, "DISPATCH_POLL_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load_config(env)


def start_refused(env: dict[str, str], timeout: float = 30, wrapper: tuple = ()) -> str:
    """Starts the service with `env` (under the `wrapper` command, if any); asserts it exits
    non-zero; returns its one stderr line."""
    result = subprocess.run(
        [*wrapper, sys.executable, "orchestrator.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "abc"}, "configuration error: PORT='abc'"),
        ({"DATABASE_URL": "nonsense"}, "configuration error: DATABASE_URL='nonsense'"),
        ({"DATABASE_URL": "postgresql://root@127.0.0.1:1/none"}, "database unavailable:"),
        ({"UPLOAD_DIR": "README.md/uploads"}, "cannot start: UPLOAD_DIR='README.md/uploads'"),
        ({"DATA_DIR": "README.md/data"}, "database unavailable: embedded PostgreSQL"),
    ],
)
def test_start_refused_with_one_line(env, message):
    assert start_refused(env).startswith(message)


def test_port_in_use_refused_with_one_line(database_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = start_refused({"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port)})
    assert line.startswith(f"cannot start: cannot listen on 127.0.0.1:{port}:")


@pytest.fixture
def silent_port():
    """A port whose listener accepts connections (the kernel completes the handshakes) and
    never reads or sends a byte, like a server or a firewall that swallows them."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield silent.getsockname()[1]


def test_a_database_that_never_answers_fails_the_start_within_its_connect_timeout(silent_port):
    """Guards against a start that hangs forever, saying nothing, on a silent server."""
    url = f"postgresql://root@127.0.0.1:{silent_port}/none?connect_timeout=1"
    line = start_refused({"DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": "0"}, timeout=15)
    assert line.startswith("database unavailable: ")
    assert "timeout expired" in line


def test_migrations_bound_a_connect_with_no_timeout_of_its_own(silent_port, monkeypatch):
    """Guards the default: a DATABASE_URL without `connect_timeout` is bounded too."""
    monkeypatch.setattr(store.db, "CONNECT_TIMEOUT", 1)
    with pytest.raises(DatabaseUnavailable, match="timeout expired"):
        migrate.upgrade(f"postgresql://root@127.0.0.1:{silent_port}/none")


def test_connecting_is_bounded_unless_the_url_says_otherwise():
    assert parse_dsn(with_connect_timeout("postgresql://root@db/matcha"))["connect_timeout"] == (
        str(CONNECT_TIMEOUT)
    )
    own = "postgresql://root@db/matcha?connect_timeout=30"
    assert parse_dsn(with_connect_timeout(own))["connect_timeout"] == "30"


def test_an_upload_dir_that_cannot_be_written_is_refused(database_url):
    """Guards against a start that then answers every upload with a 500. /sys refuses new
    files even to root, whom permission bits do not stop."""
    env = {"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": "0"}
    line = start_refused({**env, "UPLOAD_DIR": "/sys/kernel"}, timeout=15)
    assert line.startswith("cannot start: UPLOAD_DIR='/sys/kernel': cannot write a file in it: ")


@pytest.fixture
def unlistable_dir():
    """A directory that files can be created in but that cannot be listed (mode -wx)."""
    path = Path(tempfile.mkdtemp())
    path.chmod(0o333)
    yield path
    path.chmod(0o700)
    shutil.rmtree(path)


def without_root_file_access() -> tuple:
    """A command prefix under which root, too, obeys permission bits (it loses the
    capabilities that bypass them)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    assert setpriv, "as root, this test needs setpriv (util-linux) to drop root's file access"
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")


def test_an_upload_dir_that_cannot_be_listed_is_refused(database_url, unlistable_dir):
    """Guards against a start that crashes with a traceback in the sweep of partial uploads."""
    env = {"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": "0"}
    line = start_refused(
        {**env, "UPLOAD_DIR": str(unlistable_dir)}, timeout=15, wrapper=without_root_file_access()
    )
    assert line.startswith(f"cannot start: UPLOAD_DIR='{unlistable_dir}': cannot list it: ")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.env)
def test_every_setting_is_documented_with_its_default(setting):
    """Guards against the README table or `.env.example` drifting from the code."""
    default = f"`{setting.default}`" if setting.default else "(empty)"
    readme_row = f"| `{setting.env}` | {default} | {setting.help} |"
    assert readme_row in (ROOT / "README.md").read_text()
    env_example = f"# {setting.help}\n{setting.env}={setting.default}\n"
    assert env_example in (ROOT / ".env.example").read_text()
