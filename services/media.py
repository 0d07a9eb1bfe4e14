"""Files in UPLOAD_DIR: where a stored name lives, and removing a match's files."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

URL_PREFIX = "/uploads/"


def upload_url(stored_name: str) -> str:
    return URL_PREFIX + stored_name


def path_in_uploads(upload_dir: str, name: str) -> Path | None:
    """The file `name` inside UPLOAD_DIR, or None if the name would lead anywhere else."""
    root = Path(upload_dir).resolve()
    if not name or "\0" in name:
        return None
    candidate = (root / name).resolve()
    return candidate if candidate != root and candidate.is_relative_to(root) else None


def remove_uploads(upload_dir: str, urls: Iterable[str | None]) -> None:
    """Deletes the files behind `/uploads/<name>` URLs; any other URL is left alone."""
    for url in urls:
        if not url or not url.startswith(URL_PREFIX):
            continue
        path = path_in_uploads(upload_dir, url.removeprefix(URL_PREFIX))
        if path is not None:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("could not remove %s: %s", path, error)
