"""Atomic writes: a temporary file or folder in the target folder, then a rename.

A reader never sees a half-written output, and a failed or killed write
leaves nothing behind under the final name.

Modes: the temporary file (0600) or folder (0700) stays private while it is
written; just before the rename it gets the mode the process umask asks for,
as a plain ``open()`` or ``mkdir`` would give it (0644 files and 0755
folders under umask 022, 0640 and 0750 under 027).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medsat_sr.errors import WriteError

__all__ = ["atomic_path", "atomic_dir", "write_bytes", "check_writable", "current_umask"]

_FILE_MODE = 0o666
_DIR_MODE = 0o777


def check_writable(path: Path) -> Path:
    """Check that ``path`` can be created; return its parent folder.

    Raises:
        WriteError: the parent folder is missing or not writable.
    """
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise WriteError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(f"{path}: output folder {parent} is not writable")
    return parent


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting
    and restoring it (``os.umask``), which is not atomic with respect to
    other threads creating files at that instant.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish_mode(tmp: Path, *, folder: bool) -> None:
    """Give ``tmp`` the mode a fresh file or folder gets under the current umask."""
    os.chmod(tmp, (_DIR_MODE if folder else _FILE_MODE) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; rename it to ``path`` on success.

    The temporary name keeps the final suffix (``.nii.gz``, ``.tif``), so
    libraries that choose a format from the suffix still do the right thing.
    The file is private (0600) while it is written and gets the umask's mode
    (``0o666 & ~umask``) when it is renamed into place.

    Raises:
        WriteError: the folder is not writable or the write failed.
    """
    path = Path(path)
    check_writable(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{suffix}", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"{path}: cannot create a file in {path.parent}: {exc.strerror}") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _publish_mode(tmp, folder=False)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, WriteError):
            raise
        raise WriteError(f"{path}: write failed: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path` (complete or absent, the umask's mode).

    Raises:
        WriteError: the folder is not writable or the write failed.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; move it into place on success.

    An existing folder at ``path`` is replaced only after the new one is
    complete (when ``overwrite`` is true). The folder is private (0700) while
    it is filled and gets the umask's mode (``0o777 & ~umask``) when it is
    moved into place; files created in it follow the umask as usual.

    Raises:
        WriteError: the parent is not writable, ``path`` exists and
            ``overwrite`` is false, or the write failed.
    """
    path = Path(path)
    check_writable(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{path}: exists and is not a folder")
    if path.exists() and not overwrite:
        raise WriteError(f"{path}: folder exists (pass overwrite=True to replace it)")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    except OSError as exc:
        raise WriteError(f"{path}: cannot create a folder in {path.parent}: {exc.strerror}") from exc
    try:
        yield tmp
        _publish_mode(tmp, folder=True)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, WriteError):
            raise
        raise WriteError(f"{path}: write failed: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
