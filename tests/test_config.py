"""Settings come from the environment; a wrong one stops the start with one clear line."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.config import SETTINGS, ConfigError, load_config

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


def start_refused(env: dict[str, str]) -> str:
    """Starts the service with `env`; asserts it exits non-zero; returns its one stderr line."""
    result = subprocess.run(
        [sys.executable, "orchestrator.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
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


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.env)
def test_every_setting_is_documented_with_its_default(setting):
    """Guards against the README table or `.env.example` drifting from the code."""
    default = f"`{setting.default}`" if setting.default else "(empty)"
    readme_row = f"| `{setting.env}` | {default} | {setting.help} |"
    assert readme_row in (ROOT / "README.md").read_text()
    env_example = f"# {setting.help}\n{setting.env}={setting.default}\n"
    assert env_example in (ROOT / ".env.example").read_text()
