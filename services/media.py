"""Files in UPLOAD_DIR: where a stored name lives, which files may be served, removing them."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

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


def upload_name(url: str | None) -> str | None:
    """The name in UPLOAD_DIR that a `/uploads/<name>` URL serves, normalised (`a/./b` is
    `a/b`, `%20` a space); None for any other URL, and for names that leave the folder or are
    hidden (temp files of uploads in progress), which are never served either."""
    # Only the service's own relative URLs: an absolute one (a URL intake's remote video,
    # say) names a file elsewhere, whatever its path looks like.
    if not url or not url.startswith(URL_PREFIX):
        return None
    path = unquote(urlsplit(url).path)
    name = posixpath.normpath(path.removeprefix(URL_PREFIX))
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or "\0" in name:
        return None
    return None if any(part.startswith(".") for part in parts) else name


def remove_files(upload_dir: str, names: Iterable[str]) -> None:
    """Deletes these files (names from `upload_name`) from UPLOAD_DIR.

    A symlink is removed itself, never the file it points to, and nothing is removed through
    a folder that leads out of UPLOAD_DIR.
    """
    root = Path(upload_dir).resolve()
    for name in names:
        path = root / name
        try:
            if path.parent.resolve().is_relative_to(root) and (path.is_symlink() or path.is_file()):
                path.unlink()
        except OSError as error:
            log.warning("could not remove %s: %s", path, error)
