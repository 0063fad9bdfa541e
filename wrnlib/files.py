"""Files that survive a crash and folders with one writer: atomic writes, JSON, and an OS lock per folder."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .errors import setting


def write_atomic(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(f)`` into ``<path>.tmp``, then rename it over ``path``: a crash or a full disk leaves the old
    file intact, and the error says so."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # torch.save reports a short write (a full disk) as a RuntimeError from its zip writer
        if isinstance(exc, (OSError, RuntimeError)):
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise OSError(getattr(exc, "errno", None), f"could not write {path} ({reason}); {kept}; free disk "
                                                       f"space or check the folder's permissions") from None
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def write_json(path: str | Path, data: Any) -> None:
    write_bytes(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------- one writer per folder


class FolderLockedError(OSError):
    """Another live process holds the folder's lock (it is training that run, or running that study)."""


def lock_path(folder: str | Path) -> Path:
    """The lock file of a folder: in the machine's temporary folder, named after the folder's absolute
    path, so the folder itself (and the one around it) stays exactly as the run leaves it."""
    key = hashlib.sha256(os.fsencode(Path(folder).resolve())).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / "wrnlib-locks" / f"{key}.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, doing: str = "training it"):
    """Hold an exclusive OS lock (flock) on ``folder`` for the duration; refuse at once when another
    process holds it. The kernel releases the lock when its process ends, however it ends, so a
    killed run never leaves a stale lock. The lock file itself stays (empty, in the temporary folder):
    removing it while another process may be opening it would let two processes each lock a different
    file. Locks are per machine (a shared folder used from two machines is not covered)."""
    folder = Path(folder)
    if folder.parent.exists() and not folder.parent.is_dir():
        raise NotADirectoryError(f"{folder.parent} is a file, not a folder; point the output folder "
                                 f"({setting('out_dir')}) somewhere else")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder; choose another {setting('name')} or "
                                 f"{setting('out_dir')}")
    path = lock_path(folder)
    if not path.parent.is_dir():
        path.parent.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(path.parent, 0o1777)  # like /tmp: every user may lock, none may remove another's lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderLockedError(f"{folder} is in use: another process is {doing} (it holds the lock {path}); "
                                f"wait for it to finish, or choose another name") from None
    try:
        yield folder
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_locked(folder: str | Path) -> bool:
    """Whether a live process holds ``folder``'s lock right now (this one included)."""
    path = lock_path(folder)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock taken to test it
    return False
