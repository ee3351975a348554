"""Options several commands share, defined once: where the data set is, which device runs."""
from __future__ import annotations

DATA_HELP = "CIFAR-10 folder or archive (default: $CIFARLAB_DATA, then the user cache)"


def add_data(p, purpose: str = "") -> None:
    """--data; `purpose` says what the command reads it for, when that is not obvious."""
    p.add_argument("--data", help=DATA_HELP + (f"; {purpose}" if purpose else ""))


def check_data(data) -> None:
    """--data, when given, names a folder or an archive that is there: refused in one line otherwise
    (no fall back to $CIFARLAB_DATA, no download for a path that cannot hold the data set)."""
    if not data:
        return
    from pathlib import Path

    from ..data import ARCHIVES, BIN_DIR, PY_DIR, DataError
    path = Path(data).expanduser()
    holds = (f"a data folder holds {BIN_DIR} or {PY_DIR} (or is one of them), or pass the archive "
             f"{' or '.join(ARCHIVES)}; or leave --data out to use $CIFARLAB_DATA or the user cache")
    try:
        path.stat()
    except OSError as e:
        why = "no such file or folder" if isinstance(e, FileNotFoundError) else (e.strerror or str(e)).lower()
        raise DataError(f"--data {data}: {why}; {holds}") from None
    if not path.is_dir() and path.name not in ARCHIVES:
        raise DataError(f"--data {data} is a file, not a CIFAR-10 folder or archive; {holds}")


def add_device(p) -> None:
    """--device, the same choice and default everywhere (train and study take device=... as a setting)."""
    p.add_argument("--device", default="auto", help="auto (a GPU when present, else the CPU), cpu, cuda, cuda:N")
