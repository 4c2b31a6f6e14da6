"""Files that hold data or keys are private to the user who runs Souq: directories 0700, files
0600, whatever the umask, and modes left too open by an earlier run are tightened."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PRIVATE_UMASK = 0o077


def restrict_umask() -> None:
    """From now on this process (and every process it starts) creates files 0600, dirs 0700."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path` made (with its missing parents) and tightened to 0700."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR)
    return path


def private_files(paths: Iterable[Path]) -> None:
    """Tighten these files to 0600 where they exist (a database and its -wal, -shm...)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            _tighten(path, PRIVATE_FILE)


def private_tree(root: Path) -> None:
    """`root` and everything under it: directories 0700, files 0600 (symlinks left alone)."""
    private_dir(root)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            with contextlib.suppress(FileNotFoundError):
                _tighten(Path(directory, name), PRIVATE_DIR)
        private_files(Path(directory, name) for name in files)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a file that is 0600 from its first byte (replaced atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _tighten(path: Path, mode: int) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return
    if stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(stat.S_IMODE(info.st_mode) & mode)
