"""cifarlab predict: the classes of image files, with a run or an exported model."""
from __future__ import annotations

import json
import os
import re
import stat
import sys

import numpy as np

from ..data import CLASSES
from ..errors import UsageError
from ..inference.predict import ImageError, ModelError, load, load_image, own_tta, prediction
from .common import add_device


def add_parser(sub, help: str) -> None:
    p = sub.add_parser("predict", help=help,
                       description="Predict the classes of image files (PNG, JPEG, BMP, GIF, WebP, TIFF, any "
                                   "size: resized to 32x32 as Keras load_img does) with a run or an exported "
                                   "model. A file that fails is reported on stderr and the others are still "
                                   "predicted; the exit status is 1 if any failed.")
    p.add_argument("model", metavar="RUN_DIR", help="run folder, export folder, or .pt/.safetensors/.onnx file")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", "-k", type=int, default=3, help="how many classes to show (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation at the model's own level (its run's tta; the mirror where it had none)")
    p.add_argument("--tta-level", type=int, choices=(1, 2), metavar="{1,2}",
                   help="test-time augmentation at this level: 1 averages with the mirrored image, 2 also with "
                        "one-pixel shifts")
    add_device(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    if not 1 <= args.top <= len(CLASSES):
        raise UsageError(f"--top must be between 1 and {len(CLASSES)}")
    for what, path in [("model", args.model)] + [("image", i) for i in args.images]:
        _local_file(what, path)
    try:
        model = load(args.model, args.device)
    except ModelError as e:
        raise UsageError(str(e)) from None
    tta = args.tta_level or (own_tta(model) if args.tta else 0)
    arrays, names, errors = [], [], []
    for path in args.images:  # read each on its own, so one bad file spoils nothing else
        try:
            arrays.append(load_image(path))
            names.append(path)
        except ImageError as e:
            errors.append({"file": path, "error": str(e)})
            print(f"cifarlab predict: error: {e}", file=sys.stderr)
    results = []
    if arrays:
        probs = model.probs(np.stack(arrays), tta=tta)
        results = [prediction(n, p, args.top, model.classes) for n, p in zip(names, probs)]
    if args.json:
        print(json.dumps({"model": str(args.model), "predictions": [r.as_dict() for r in results],
                          "errors": errors}, indent=2))
    else:
        width = max((len(r.source) for r in results), default=0)
        for r in results:
            print(f"{r.source:<{width}}  " + "  ".join(f"{c:<10} {p:6.1%}" for c, p in r.top).rstrip())
    if errors:
        print(f"cifarlab predict: {len(errors)} of {len(args.images)} file(s) failed", file=sys.stderr)
    return 1 if errors else 0


def _local_file(what: str, path: str) -> None:
    """Refuse, before opening anything, a URL and a path that is neither a file nor a folder (a FIFO would
    hang, a device would never end); a missing or damaged file is the loader's to name."""
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", path):
        raise UsageError(f"{what} {path}: a URL; predict reads local files, so download it first")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UsageError(f"{what} {path} is not a regular file (a pipe, device or socket); give "
                         + ("an image file" if what == "image" else "a run folder, an export folder or a model file"))
