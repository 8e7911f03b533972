"""Files and devices, checked at the door: atomic writes, writable outputs, usable torch devices.

An atomic write leaves a file either the old one or the complete new one.  The
checks run before any work, so that a bad output path or device costs a
sentence, not a finished computation.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import torch

from trc.errors import TRCError, is_integer


_GUARD: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("trc_write_guard", default=None)


@contextlib.contextmanager
def write_guard(check: Callable[[], None]) -> Iterator[None]:
    """Inside the block every :func:`atomic_write` calls ``check()`` just before it moves its file into
    place, and ``check`` refuses the write by raising.  ``trc sweep`` uses it so that a worker whose
    trial was taken for dead (stopped, not killed) cannot write into the run folder its retry resumes."""
    token = _GUARD.set(check)
    try:
        yield
    finally:
        _GUARD.reset(token)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one step.

    The temporary file lives in the target's folder (so the final rename is
    atomic) and keeps the target's suffix (so ``np.savez`` and friends do not
    append another).  Parent folders are created.  On any failure the
    temporary file is removed and ``path`` is untouched; so it is when a
    :func:`write_guard` refuses the write.
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
        if (check := _GUARD.get()) is not None:
            check()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Fail before the work, not after it, when ``path`` cannot be written (one sentence).

    The nearest existing folder on the way to ``path`` is probed by creating (and
    removing) a temporary file in it: permission bits do not tell, for example, that
    a read-only file system refuses even root.
    """
    path = Path(path)
    if path.is_dir():
        raise TRCError(f"output {str(path)!r} is a folder, not a file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise TRCError(f"cannot write {str(path)!r}: {str(folder)!r} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".trc-write-check.")
    except OSError as e:
        raise TRCError(f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable "
                       f"({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` if this machine can compute on it, else one sentence.

    Unknown names (``"foo"``), devices this torch was built without or that are not
    present (``"cuda"`` without CUDA, ``"cuda:3"`` on a one-GPU machine) and the
    ``"meta"`` device (no data) are refused.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TRCError(f"device {str(device)!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "meta":
        raise TRCError("device 'meta' holds no data; use cpu or an accelerator")
    try:
        torch.empty(1, device=dev)
    except Exception:  # noqa: BLE001 - torch raises AssertionError, RuntimeError, ... for absent devices
        raise TRCError(f"device {str(device)!r} is not available on this machine"
                       + (" (torch sees no CUDA device)" if dev.type == "cuda" and not torch.cuda.is_available()
                          else "")) from None
    return dev


MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> int:
    """``seed`` if it is an integer in ``[0, MAX_SEED]`` (what every generator ``trc`` seeds accepts)."""
    if not is_integer(seed) or not 0 <= seed <= MAX_SEED:
        raise TRCError(f"a seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)
