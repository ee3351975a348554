"""Ablation of the fast94 recipe: the full recipe, then each part switched off in turn, one seed each.

    python3 benchmarks/ablate_fast94.py --out runs/ablate-fast94                 # shortened budget (below)
    python3 benchmarks/ablate_fast94.py --out runs/ablate-full --full             # full length (GPU machine)
    python3 benchmarks/ablate_fast94.py --out runs/x --only full,no_whiten ...    # some rows
    python3 benchmarks/ablate_fast94.py --out runs/ablate-fast94 --table          # the finished rows' table

Shortened budget (the default, sized for 2 CPU cores): the preset's own data and batch
(45,000 training images, 5,000 held out, batch 1024) for 4 epochs instead of 10, the
warm-up kept at 23% of the steps and the whitening bias trained in the first epoch only.
One seed's held-out accuracy on 5,000 images moves by about +-0.4 points from noise
alone: read smaller differences as ties. Accuracy is the held-out split's,
measured with each row's own test-time augmentation after the final (Lookahead) weights;
the test set is not touched (test=false), so the table can guide choices honestly.
With --full: the preset as it is (50,000 images, 5,000 held out for the table, 10 epochs)
and the test set measured once per row at the end.

Each row is its own run folder under --out (resumable: a finished row is not rerun);
the table is written to --out/ablation.md and printed.
"""
from __future__ import annotations

import argparse
import sys

import rows
from cifarlab.config import load_preset

# (row name, what is switched off, overrides that switch it off)
ROWS = [
    ("full", "nothing: the whole recipe", []),
    ("no_whiten", "patch-whitening first layer (a trained 2x2 conv instead)", ["whiten=false"]),
    ("no_bn_freeze", "frozen BN scales (trained instead)", ["bn_freeze_weight=false"]),
    ("no_bias_lr", "64x learning rate on BatchNorm shifts", ["bias_lr_scale=1"]),
    ("no_smoothing", "label smoothing 0.2", ["label_smoothing=0"]),
    ("no_lookahead", "Lookahead every 5 steps", ["lookahead_every=0"]),
    ("random_flip", "alternating (derandomised) flip: coin-toss flip instead", ["alt_flip=false"]),
    ("no_translate", "2-pixel translation", ["crop_pad=0"]),
    ("no_tta", "test-time augmentation (mirror + 1-px translations)", ["tta=0"]),
]

SHORT = {"val_split": 5000, "epochs": 4}


def budget(full: bool) -> list[str]:
    if full:
        return ["val_split=5000"]
    base = load_preset("fast94")
    frac = SHORT["epochs"] / base.epochs
    return [f"{k}={v}" for k, v in SHORT.items()] + [
        f"warmup_epochs={base.warmup_epochs * frac:g}",
        f"whiten_bias_epochs={max(1, round(base.whiten_bias_epochs * frac))}", "test=false"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rows.add_arguments(ap, "row")
    ap.add_argument("--full", action="store_true", help="full length, test set measured (a GPU's job)")
    args = ap.parse_args(argv)
    common = budget(args.full) + [f"seed={args.seed}"] + args.extra
    return rows.run_rows(ap, args, ROWS, "fast94", common, "row", "ablation.md",
                         lambda results, common: render(results, common, args.full))


def render(results, common, full: bool) -> str:
    ref = next((s for n, _, _, s in results if n == "full"), None)
    acc = (lambda s: s["test_acc"]) if full else (lambda s: s.get("val_acc_final"))
    label = "test acc" if full else "held-out acc"
    lines = [f"Budget: {' '.join(common)}", "",
             f"| row | switched off | {label} | vs full | train s | total s | img/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, what, off, s in results:
        a = acc(s)
        d = f"{100 * (a - acc(ref)):+.2f}" if ref is not None and name != "full" else ""
        switch = f" (`{' '.join(off)}`)" if off else ""
        lines.append(f"| {name} | {what}{switch} | {100 * a:.2f}% | {d} | "
                     f"{s['wall_seconds']:.0f} | {s['total_seconds']:.0f} | {s['mean_images_per_second']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
