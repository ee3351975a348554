"""Options several commands share, defined once: where the data set is, which device runs."""
from __future__ import annotations

DATA_HELP = "CIFAR-10 folder or archive (default: $CIFARLAB_DATA, then the user cache)"


def add_data(p, purpose: str = "") -> None:
    """--data; `purpose` says what the command reads it for, when that is not obvious."""
    p.add_argument("--data", help=DATA_HELP + (f"; {purpose}" if purpose else ""))


def add_device(p) -> None:
    """--device, the same choice and default everywhere (train and study take device=... as a setting)."""
    p.add_argument("--device", default="auto", help="auto (a GPU when present, else the CPU), cpu, cuda, cuda:N")
