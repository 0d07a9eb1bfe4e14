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
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                await client.fetch(self.url + "/health")
                return self
            except (OSError, HTTPClientError):
                pass  # not listening yet, or its database check not passing yet
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"server not healthy within {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.05)

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def exited(self, timeout: float = 20.0) -> int:
        """The exit code, once the process has ended."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.process.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"server still running after {timeout} s:\n{self.log()}")
            await asyncio.sleep(0.02)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
