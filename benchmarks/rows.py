"""Shared by the benchmark scripts that train a list of named override sets ("rows") of a preset.

Each row is its own run folder under --out: a finished row (summary.json) is read, not
rerun, so a script can be stopped and started again, or run as several processes on
disjoint --only lists. The table covers every finished row and goes to --out/TABLE.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cifarlab import runtime  # noqa: E402

runtime.apply()  # the command's engine settings, before torch loads

from cifarlab.config import apply_overrides, load_preset  # noqa: E402
from cifarlab.train import train  # noqa: E402


def add_arguments(ap: argparse.ArgumentParser, kind: str) -> None:
    ap.add_argument("--out", required=True, help=f"folder for the {kind}s' run folders and the table")
    ap.add_argument("--only", help=f"comma-separated {kind} names (default: all)")
    ap.add_argument("--table", action="store_true", help=f"only print the table of the finished {kind}s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", help="CIFAR-10 folder (default: $CIFARLAB_DATA)")
    ap.add_argument("extra", nargs="*", metavar="key=value", help=f"overrides for every {kind} (e.g. threads=1)")


def run_rows(ap, args, rows, preset: str, common: list[str], kind: str, table_name: str, render) -> int:
    """Train the chosen rows (name, what, overrides) of `preset` with `common` overrides after
    each row's own; write and print render(results) for the finished ones."""
    names = [r[0] for r in rows]
    only = args.only.split(",") if args.only else names
    unknown = sorted(set(only) - set(names))
    if unknown:
        ap.error(f"unknown {kind} {', '.join(unknown)}; {kind}s: {', '.join(names)}")
    out = Path(args.out)
    results = []
    for name, what, over in rows:
        run = out / name
        if (run / "summary.json").is_file():
            s = json.loads((run / "summary.json").read_text())
        elif args.table or name not in only:
            continue
        else:
            cfg = apply_overrides(load_preset(preset), over + common)
            cfg.name = f"{preset}-{name}"
            print(f"== {name}: {what}", flush=True)
            # a row cut short starts over (force): its times come from one uninterrupted run
            s = train(cfg, run, data_path=args.data, progress=False, command=sys.argv, force=True)
        results.append((name, what, over, s))
    table = render(results, common)
    out.mkdir(parents=True, exist_ok=True)
    (out / table_name).write_text(table)
    print(table)
    return 0
