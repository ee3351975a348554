"""cifarlab compare: run folders grouped by settings, tested against the first group, drawn."""
from __future__ import annotations

import time
from pathlib import Path

from ..study.compare import format_table, write_compare


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("compare", help=help,
                       description="Group run folders by their settings (everything but the seed), then write "
                                   "compare.html, compare.md and compare.json: mean test accuracy ± std per "
                                   "group, Welch's test against the first group, validation curves.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (the first group is the reference)")
    p.add_argument("--out", help="output folder (default: comparisons/YYYYmmdd-HHMMSS)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    out = Path(args.out or f"comparisons/{time.strftime('%Y%m%d-%H%M%S')}")
    rep = write_compare(args.run_dirs, out)
    for line in format_table(rep):
        print(line)
    if rep["skipped"]:
        print(f"left out: {', '.join(rep['skipped'])}")
    print(f"-> {out / 'compare.md'}\n-> {out / 'compare.html'}")
    return 0
