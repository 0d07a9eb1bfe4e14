"""`python orchestrator.py` as a child process, for tests of crashes, restarts and signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from services.config import SETTINGS
from tests.waiting import wait_until

ROOT = Path(__file__).parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One orchestrator process on its own port; its log goes to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # Only the given settings: none leak in from the environment running the tests.
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name not in {setting.env for setting in SETTINGS}
        }
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "orchestrator.py")],
                cwd=ROOT,
                env={**inherited, **env, "HOST": "127.0.0.1", "PORT": str(self.port)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text()

    async def started(self, timeout: float = 20.0) -> ServerProcess:
        """Waits until `/health` answers 200; fails with the log if the process exits first."""
        client = AsyncHTTPClient()

        async def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}")
            try:
                await client.fetch(self.url + "/health")
            except (OSError, HTTPClientError):
                return False  # not listening yet, or its database check not passing yet
            return True

        try:
            await wait_until(healthy, timeout, interval=0.05)
        except AssertionError as error:
            raise AssertionError(f"{error}; server log:\n{self.log()}") from None
        return self

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def exited(self, timeout: float = 20.0) -> int:
        """The exit code, once the process has ended."""
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
