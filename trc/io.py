"""Atomic file writes: a file is either the old one or the complete new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from trc.errors import TRCError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one step.

    The temporary file lives in the target's folder (so the final rename is
    atomic) and keeps the target's suffix (so ``np.savez`` and friends do not
    append another).  Parent folders are created.  On any failure the
    temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TRCError(f"cannot create folder {str(path.parent)!r}: {e.strerror}") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Fail before the work, not after it, when ``path`` cannot be written (one sentence)."""
    path = Path(path)
    if path.is_dir():
        raise TRCError(f"output {str(path)!r} is a folder, not a file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise TRCError(f"cannot write {str(path)!r}: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TRCError(f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable")
