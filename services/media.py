"""Files in UPLOAD_DIR: where a stored name lives, which files may be served, removing them."""

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


def servable_file(upload_dir: str, name: str) -> Path | None:
    """The regular file `name` leads to inside UPLOAD_DIR, or None.

    None for anything outside the folder (`..`, absolute paths, symlinks pointing out), for
    directories, and for hidden names, which include the temp files of uploads in progress.
    """
    try:
        path = path_in_uploads(upload_dir, name)
        if path is None or not path.is_file():
            return None
    except OSError:  # a name too long for the filesystem, say
        return None
    inside = path.relative_to(Path(upload_dir).resolve()).parts
    if any(part.startswith(".") for part in (*Path(name).parts, *inside)):
        return None
    return path


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
