"""cifarlab evaluate: a run's checkpoint on the test set, per class, with its confusion matrix."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UsageError
from ..inference.evaluate import TTA_NAMES, evaluate_model, write_evaluation
from ..inference.predict import load_checkpoint, own_tta
from ..runfolder import read_summary
from .common import add_data, add_device


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("evaluate", help=help,
                       description="Evaluate a run's checkpoint on the 10,000 CIFAR-10 test images and write "
                                   "evaluation.json and confusion.png into the run folder (with --tta: "
                                   "evaluation_tta.json and confusion_tta.png, _tta2 at level 2).")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation at the run's own level (its tta; the mirror where it had none)")
    p.add_argument("--tta-level", type=int, choices=(1, 2), metavar="{1,2}",
                   help="test-time augmentation at this level: 1 averages each image with its mirror, 2 also "
                        "with one-pixel shifts")
    add_data(p)
    add_device(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    run = Path(args.run)
    if not (run / "checkpoint.pt").is_file():
        raise UsageError(f"{run}: not a run folder with a checkpoint.pt (evaluate an exported model "
                         f"from Python: cifarlab.load(PATH).evaluate())")
    # a damaged summary.json is refused before any work (what it reports is printed beside the result)
    summary = read_summary(run) if (run / "summary.json").is_file() else None
    model = load_checkpoint(run / "checkpoint.pt", args.device)
    tta = args.tta_level or (own_tta(model) if args.tta else 0)
    r = evaluate_model(model, tta=tta, data=args.data)
    print(f"{run}: checkpoint of epoch {r['epoch']}, {r['images']:,} test images, {r['device']}"
          + (f", {TTA_NAMES[tta]}" if tta else ""))
    print(f"{'class':<12} {'accuracy':>8}")
    for name, acc in r["per_class_acc"].items():
        print(f"{name:<12} {acc:>8.4f}")
    line = f"test accuracy {r['test_acc']:.4f}  test loss {r['test_loss']:.4f}"
    if summary is not None and tta == int(model.config.get("tta") or 0):  # measured as the run measured it
        reported = summary["test_acc"]
        line += (f"  (summary.json: {reported:.4f})" if reported is not None else
                 "  (summary.json has none: the run was trained with test=false)")
    print(line)
    try:
        files = write_evaluation(run, r, model.config.get("name"), tta)
    except OSError as e:  # a read-only run folder: the results above are all there is
        print(f"cifarlab evaluate: warning: could not write the results into {run} "
              f"({e.strerror or e}); they are printed above only", file=sys.stderr)
        return 0
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
