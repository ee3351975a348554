"""Files that never exist half-written, and temporaries that do not outlive their writer.

    atomic_write(path, lambda f: torch.save(state, f))   # temp beside path, fsync, rename
    atomic_write_text(path, text)
    move(src, dst)                                        # rename, durable
    sweep(folder, ".*.tmp")                               # remove temporaries whose writer is gone

Every temporary is created in the folder of its target (so the final rename is atomic)
under a unique name that carries its writer: `.NAME.PID@HOST.RANDOM.tmp`. sweep() removes
one when that process is dead (same host), or when it has not changed for STALE_SECONDS
(another host, or a name without a writer) or for a day (a PID since reused); the
temporary of a live writer is kept.
A failed write removes its temporary and raises WriteError naming the file; the file
it was to replace is unchanged.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

STALE_SECONDS = 600  # a temporary nobody has written to for this long has no live writer
REUSED_SECONDS = 86400  # ... even if a process of its writer's PID is running (a reused PID)
_WRITER = re.compile(r"\.(\d+)@([A-Za-z0-9-]*)\.")


class WriteError(OSError):
    """A file could not be written (disk full, read-only, ...); what it replaces is unchanged."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def writer_tag() -> str:
    """PID@HOST of this process, as temporaries carry it."""
    return f"{os.getpid()}@{_host()}"


def temp_file(folder, name: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new empty file in `folder` for a temporary of `name`: (fd, path), the name carrying this process."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.{writer_tag()}.", suffix=suffix)
    return fd, Path(tmp)


def temp_dir(folder, name: str) -> Path:
    return Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}.{writer_tag()}."))


def make_readable(path) -> None:
    """The usual permissions (0666 less the umask): mkstemp makes its files 0600, private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path, write) -> None:
    """Call write(file) on a unique temporary beside `path`, fsync it and rename it into place.

    On any failure (an exception, Ctrl-C) the temporary is removed and `path` is left as it
    was; an OSError (disk full, say) becomes a WriteError that names `path`.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path.parent, path.name)
        with os.fdopen(fd, "wb") as f:
            make_readable(tmp)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except Exception as e:
        cause = _os_error(e)
        if cause is None or isinstance(e, WriteError):
            raise
        kept = f"; the previous {path.name} is unchanged" if path.exists() else ""
        raise WriteError(cause.errno or errno.EIO, f"could not write {path}: {cause.strerror or cause}{kept}") \
            from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`, if any (torch.save, for one, turns a failed write into a RuntimeError)."""
    for _ in range(5):
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
        if e is None:
            return None
    return None


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def move(src, dst) -> None:
    """Rename `src` onto `dst` (one file system: a file written beside it) and make the rename durable."""
    os.replace(src, dst)
    _fsync_dir(Path(dst).parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (where the file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether the temporary at `path` has no live writer (see the module docstring)."""
    try:
        age = (now or time.time()) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    m = _WRITER.search(path.name)
    if m and m.group(2) == _host():
        pid = int(m.group(1))
        if pid == os.getpid():
            return False
        # a live PID unchanged for a day is another process that reused the number
        return not _alive(pid) or age > REUSED_SECONDS
    return age > STALE_SECONDS


def sweep(folder, *patterns: str) -> list[Path]:
    """Remove the entries of `folder` matching any of the glob `patterns` that are stale
    temporaries (files or folders); returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
            continue
        path = Path(entry.path)
        if not is_stale(path, now):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass  # gone meanwhile, or not ours to remove
    return removed
