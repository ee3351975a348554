"""Choose fast_combined's settings on a held-out split: candidate recipes, one seed each.

    python3 benchmarks/search_fast_combined.py --out runs/search-fc                  # every candidate
    python3 benchmarks/search_fast_combined.py --out runs/search-fc --only c1,c3 threads=1
    python3 benchmarks/search_fast_combined.py --out runs/search-fc --table          # finished rows only

Every candidate trains the preset with its overrides on 45,000 training images and is
scored on the other 5,000 (val_split=5000), with its own test-time augmentation and
final weights; the test set is not touched (test=false). The winner's overrides go into
presets/fast_combined.yaml, and only then is the test set measured, once per seed.
Each candidate is its own run folder under --out (a finished one is not rerun); the
table is written to --out/search.md and printed.
"""
from __future__ import annotations

import argparse
import sys

import rows

# (name, what changes, overrides on top of the preset as it was before the search)
CANDIDATES = [
    ("c1", "the first recipe (dropout 0.1-0.3, crop 4, smoothing 0.1) + mirror TTA",
     ["dropout=[0.1,0.2,0.2,0.3]", "crop_pad=4", "label_smoothing=0.1", "tta=1", "lookahead_every=0"]),
    ("c3", "c1 with dropout only before the last layer (0.2), + Lookahead every 5 steps",
     ["dropout=[0,0,0,0.2]", "crop_pad=4", "label_smoothing=0.1", "tta=1", "lookahead_every=5"]),
    ("c4", "c3 with 2-px translation and the alternating flip",
     ["dropout=[0,0,0,0.2]", "crop_pad=2", "alt_flip=true", "label_smoothing=0.1", "tta=1", "lookahead_every=5"]),
    ("c6", "c3 with peak lr 0.2", ["dropout=[0,0,0,0.2]", "crop_pad=4", "label_smoothing=0.1", "tta=1",
                                   "lookahead_every=5", "lr=0.2"]),
    ("c7", "c3 with label smoothing 0.2", ["dropout=[0,0,0,0.2]", "crop_pad=4", "label_smoothing=0.2",
                                           "tta=1", "lookahead_every=5"]),
    ("c8", "c3 with peak lr 0.4", ["dropout=[0,0,0,0.2]", "crop_pad=4", "label_smoothing=0.1", "tta=1",
                                   "lookahead_every=5", "lr=0.4"]),
]
BUDGET = ["val_split=5000", "test=false"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rows.add_arguments(ap, "candidate")
    args = ap.parse_args(argv)
    common = BUDGET + [f"seed={args.seed}"] + args.extra
    return rows.run_rows(ap, args, CANDIDATES, "fast_combined", common, "candidate", "search.md", render)


def held_out(s: dict) -> float:
    return s.get("val_acc_final") or s["val_acc_last"]


def render(results, common) -> str:
    lines = [f"Budget: the preset's 10 epochs, {' '.join(common)}; held-out accuracy with each row's TTA, "
             "final weights", "",
             "| candidate | what changes | held-out acc | epoch 10 (no TTA) | train s | img/s | overrides |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for name, what, over, s in results:
        lines.append(f"| {name} | {what} | {100 * held_out(s):.2f}% | {100 * s['val_acc_last']:.2f}% | "
                     f"{s['wall_seconds']:.0f} | {s['mean_images_per_second']:.0f} | `{' '.join(over)}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
