"""cifarlab compare: run folders grouped by settings, tested against the first group, drawn."""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import UsageError
from ..reporting.compare import format_table, write_compare


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("compare", help=help,
                       description="Group run folders by their settings (everything but the seed), then write "
                                   "compare.html, compare.md and compare.json: mean test accuracy ± std per "
                                   "group, Welch's test against the first group, validation curves.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (the first group is the reference)")
    p.add_argument("--out", help="output folder (default: comparisons/YYYYmmdd-HHMMSS)")
    p.add_argument("--within", type=float, metavar="POINTS",
                   help="a margin of equivalence in accuracy points: a group whose 95%% interval of the "
                        "difference to the first group lies inside ±POINTS is called equivalent to it "
                        "(e.g. --within 1: may bf16 stand in for fp32?)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    if args.within is not None and not args.within > 0:
        raise UsageError(f"--within {args.within:g}: the margin must be a positive number of accuracy points")
    out = Path(args.out or f"comparisons/{time.strftime('%Y%m%d-%H%M%S')}")
    rep = write_compare(args.run_dirs, out, within=args.within)
    for line in format_table(rep):
        print(line)
    if rep["skipped"]:
        print(f"left out: {', '.join(rep['skipped'])}")
    print(f"-> {out / 'compare.md'}\n-> {out / 'compare.html'}")
    return 0
