"""cifarlab export: a run's model as ONNX or safetensors, checked against PyTorch before it is kept."""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..inference.export import ATOL, FORMATS, RTOL, ExportError, export_run
from .common import add_data


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("export", help=help,
                       description="Export a run's model with model.json (config, normalisation, classes, the "
                                   "weights' SHA-256) beside it, checked against PyTorch on real test images "
                                   "before it is kept. A file of the other format left by an earlier export is "
                                   "removed unless it holds the same weights.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", help="output folder (default: exports/RUN_NAME)")
    add_data(p, "test images for the check")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    if not (Path(args.run) / "checkpoint.pt").is_file():
        raise UsageError(f"{args.run}: not a run folder with a checkpoint.pt")
    try:
        r = export_run(args.run, args.format, args.out, args.data)
    except ExportError as e:
        raise UsageError(str(e)) from None
    c = r["check"]
    print(f"wrote {r['path']} ({r['bytes'] / 1e6:.1f} MB) and {r['config']}")
    print(f"checked on {c['images']} CIFAR-10 test images, reloaded"
          + (" in onnxruntime" if args.format == "onnx" else " from the export folder")
          + f": max |logit difference| {c['max_abs_diff']:.2g} (tolerance {ATOL:g} + {RTOL:g}*|logit|), "
          f"top-1 agrees on {c['top1_agree']}/{c['images']}")
    for path in r["removed"]:
        print(f"removed {path}: an earlier export's other weights, which {r['config']} no longer describes")
    for path in r["kept"]:
        print(f"kept {path}: the same weights in the other format, listed in {r['config']} too")
    return 0
