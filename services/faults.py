"""Crash points for durability tests: `MATCHA_CRASH_AT=<point>` kills the process there.

Only tests set the variable. Each point is named after the moment it stands for:

- `after-upload-placed`: an uploaded video has its final name, its match is not committed.
- `after-match-commit`: a new match and its dispatch job are committed, nothing is sent yet
  (this process's dispatcher may or may not have claimed the job); an upload's temp name is
  still there.
- `before-send`: the dispatcher claimed a job and is about to send it.
"""

from __future__ import annotations

import os
import signal

CRASH_AT_ENV = "MATCHA_CRASH_AT"


def crash_point(name: str) -> None:
    """Dies at once, as `kill -9` would, when MATCHA_CRASH_AT names this point."""
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
