"""Export a run's model for other tools: ONNX, or safetensors weights with their config.

    cifarlab export runs/vgg3-20261126-120000 --format onnx          # exports/vgg3-20261126-120000/model.onnx
    cifarlab export runs/vgg3-20261126-120000 --format safetensors   # .../model.safetensors
    cifarlab.load("exports/vgg3-20261126-120000")                    # no run folder needed

Either way model.json lies beside the weights: the network's config, the run's
normalisation, the class names and the input it expects, so the folder is a model on
its own. The network takes float32 (N, 3, 32, 32) images already normalised,
(pixels/255 - mean) / std per channel, and returns (N, 10) logits.

Every export is checked before it is kept: the exported file is loaded back (ONNX in
onnxruntime) and its logits on real CIFAR-10 test images are compared with PyTorch's.

An export is built in a temporary folder inside the target (`.export.PID@HOST.*`), the
weights first and model.json last: model.json records each weights file's SHA-256
(`files`), which loading checks, and the SHA-256 of the network's tensors
(`tensors_sha256`, the same in every format), and the SHA-256 of its config, normalisation,
classes and tensors_sha256 (`description_sha256`): an export of format_version 2 without
`files` or `description_sha256` is refused as damaged (one of format_version 1, written
before it recorded them, loads as before). Only then is it moved into place: the
previous model.json is moved out first and the new one moved in last, so however the
export is stopped, no model.json describes weights that are missing or not its own. A
file of the other format left by an earlier export is removed, unless it holds the same
tensors; then model.json lists it too.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import io
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..augment import normalize
from ..files import atomic_write, atomic_write_text, move, sweep, temp_dir, temp_file
from ..data import CLASSES, load_cifar10
from ..errors import CifarlabError
from .predict import (EXPORT_CONFIG, EXPORT_FORMAT_VERSION, WEIGHT_FILES, description_sha256, load_checkpoint,
                      load_export, sha256_file)
from ..runfolder import read_summary

FORMATS = ("onnx", "safetensors")
FILE = {"onnx": "model.onnx", "safetensors": "model.safetensors"}  # each format's weights file
NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"),  # onnxscript: torch.onnx.export(dynamo=True)
         "safetensors": ("safetensors",)}
CHECK_IMAGES = 1000  # test images the export is checked on
# ONNX vs PyTorch logits, float32 on a CPU: |onnx - torch| <= ATOL + RTOL * |torch| elementwise.
# Different kernels sum in a different order; on this model the gap is a few 1e-6.
ATOL, RTOL = 1e-4, 1e-4
OPSET = 20


class ExportError(CifarlabError, RuntimeError):
    """An export that failed or did not match PyTorch; its model file is not kept."""


def describe(model, run_dir: Path) -> dict:
    """model.json: all that is needed to rebuild and feed the network without its run folder."""
    test_acc = read_summary(run_dir).get("test_acc") if (run_dir / "summary.json").is_file() else None
    meta = {
        "format": "cifarlab-model", "format_version": EXPORT_FORMAT_VERSION, "cifarlab": __version__,
        "torch": torch.__version__,
        "config": model.config, "norm": model.norm, "classes": list(CLASSES),
        "input": {"name": "input", "shape": ["N", 3, 32, 32], "dtype": "float32", "layout": "NCHW, RGB",
                  "preprocess": "(pixels / 255 - mean) / std per channel; images resized to 32x32 with "
                                "nearest-neighbour interpolation (Keras load_img)"},
        "output": {"name": "logits", "shape": ["N", 10], "note": "softmax gives the class probabilities"},
        "run": str(run_dir), "epoch": model.info.get("epoch"), "test_acc": test_acc,
        "tensors_sha256": tensors_sha256(model.net.state_dict()),
    }
    meta["description_sha256"] = description_sha256(meta)  # config, norm, classes and tensors_sha256
    return meta


def tensors_sha256(state: dict) -> str:
    """SHA-256 over a network's tensors (names, dtypes, shapes, values in row-major order):
    the same for the model.safetensors and the model.onnx of one set of weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def require(fmt: str) -> None:
    """ExportError naming the packages `fmt` needs that are missing, before any work is done."""
    missing = []
    for name in NEEDS[fmt]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"{fmt} export needs {', '.join(NEEDS[fmt])}; missing: {', '.join(missing)}. "
                          f"Install them with: pip install 'cifarlab[export]'")


def _reference(model, data, n: int):
    """The first `n` real test images (uint8), their normalised float input and PyTorch's logits."""
    x = torch.from_numpy(load_cifar10(data).x_test[:n])
    return x, normalize(x, model.mean, model.std).contiguous(), model.logits(x)


def compare(got: np.ndarray, want: np.ndarray) -> dict:
    diff = np.abs(got - want)
    return {"images": len(want), "max_abs_diff": float(diff.max()), "atol": ATOL, "rtol": RTOL,
            "within_tolerance": bool(np.all(diff <= ATOL + RTOL * np.abs(want))),
            "top1_agree": int((got.argmax(1) == want.argmax(1)).sum())}


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter narrates each stage on stdout and logs optional operators it skips; none of it matters here."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        log.setLevel(level)


def export_onnx(model, out_dir: Path, meta: dict, xin: torch.Tensor, ref: torch.Tensor) -> tuple[Path, dict]:
    require("onnx")
    import onnx  # optional packages (cifarlab[export]): require() above names any missing
    import onnxruntime as ort
    net = copy.deepcopy(model.net).cpu().to(memory_format=torch.contiguous_format).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(out_dir, "model", ".onnx")  # the exporter writes to a file name
    os.close(fd)
    try:
        with _quiet_exporter():
            torch.onnx.export(net, (xin[:2],), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=OPSET,
                              external_data=False, dynamo=True)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        entry = proto.metadata_props.add()  # a lone .onnx file still names its classes and normalisation
        entry.key, entry.value = "cifarlab", json.dumps({k: meta[k] for k in ("classes", "norm", "input",
                                                                            "tensors_sha256")})
        blob = proto.SerializeToString()
        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": xin.numpy()})[0]
        check = compare(got, ref.numpy())
        if not check["within_tolerance"]:
            raise ExportError(f"onnxruntime's logits differ from PyTorch's by up to {check['max_abs_diff']:.3g} "
                              f"(tolerance {ATOL} + {RTOL}*|logit|); the export was not kept")
        path = out_dir / FILE["onnx"]
        atomic_write(path, lambda f: f.write(blob))  # readable by all: an exported model is meant to be shared
    finally:
        tmp.unlink(missing_ok=True)
    return path, check


def export_safetensors(model, out_dir: Path, meta: dict) -> Path:
    require("safetensors")
    from safetensors.torch import save  # optional (cifarlab[export]), as require() says
    # Plain row-major CPU tensors: a channels_last weight is a strided view safetensors cannot store.
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    path = out_dir / FILE["safetensors"]
    atomic_write(path, lambda f: f.write(save(tensors, metadata={"cifarlab": json.dumps(meta)})))
    return path


def _tensors_sha256_of(path: Path) -> str | None:
    """tensors_sha256 of an earlier export's weights file; None where it cannot be told (an ONNX
    file written before cifarlab recorded it, a damaged file, a package missing)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # optional: missing, the digest is not known
            return tensors_sha256(load_file(str(path), device="cpu"))
        import onnx
        proto = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        return json.loads(meta["cifarlab"]).get("tensors_sha256")
    except Exception:  # ImportError, SafetensorError, DecodeError, KeyError, ...: not known to be the same
        return None


def _others(out_dir: Path, name: str, digest: str) -> tuple[list[Path], list[Path]]:
    """The other formats' weights files in `out_dir`: (kept: the same tensors, removed: other ones)."""
    kept, removed = [], []
    for other in WEIGHT_FILES:
        path = out_dir / other
        if other != name and (path.is_file() or path.is_symlink()):
            (kept if _tensors_sha256_of(path) == digest else removed).append(path)
    return kept, removed


def _install(build: Path, out_dir: Path, name: str, removed: list[Path]) -> None:
    """Move the built export into `out_dir`: the old model.json out first, the new one in last, so
    that no model.json there ever describes weights that are missing or not its own."""
    config = out_dir / EXPORT_CONFIG
    try:
        if config.exists() or config.is_symlink():
            move(config, build / ("previous-" + EXPORT_CONFIG))  # removed with the build folder
        for path in removed:
            path.unlink(missing_ok=True)
        move(build / name, out_dir / name)
        move(build / EXPORT_CONFIG, config)
    except OSError as e:
        raise ExportError(f"could not move the export into {out_dir}: {e.strerror or e}; export again "
                          f"once it is fixed (until then {out_dir} holds no {EXPORT_CONFIG})") from None


def export_run(run_dir, fmt: str, out=None, data=None) -> dict:
    """Export a run folder's model as `fmt` into `out` (default exports/RUN_NAME); returns what was
    checked, written, kept and removed."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    require(fmt)
    run_dir = Path(run_dir)
    out_dir = Path(out) if out else Path("exports") / run_dir.resolve().name
    blocked = next((p for p in [out_dir, *out_dir.parents] if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ExportError(f"--out {out_dir}: {blocked} is a file, not a folder; give a folder to export into "
                          f"(it is created if missing)")
    model = load_checkpoint(run_dir / "checkpoint.pt", "cpu")
    meta = describe(model, run_dir)
    x, xin, ref = _reference(model, data, CHECK_IMAGES)
    made = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create the export folder {out_dir}: {e.strerror or e}") from None
    try:
        # left by exports that were killed: build folders, and the temporaries of earlier versions
        sweep(out_dir, ".export.*", ".model.*.onnx", ".model.*.tmp")
        build = temp_dir(out_dir, "export")
    except OSError as e:  # a folder this user cannot write into (read-only, another's)
        raise ExportError(f"cannot write into the export folder {out_dir}: {e.strerror or e}; give an --out "
                          f"folder you can write to") from None
    try:
        if fmt == "onnx":
            built, _ = export_onnx(model, build, meta, xin, ref)
        else:
            built = export_safetensors(model, build, meta)
        kept, removed = _others(out_dir, built.name, meta["tensors_sha256"])
        meta["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in [built, *kept]}
        atomic_write_text(build / EXPORT_CONFIG, json.dumps(meta, indent=2))  # last: the weights are complete
        # Whatever the format, reload it the way a user would, from the export folder alone.
        back = load_export(built, "cpu").logits(x)
        check = compare(back.numpy(), ref.numpy())
        if not check["within_tolerance"]:
            raise ExportError(f"{built} reloaded gives logits off by {check['max_abs_diff']:.3g}; "
                              f"the export was not kept")
        _install(build, out_dir, built.name, removed)
    except BaseException:
        if made:  # a failed first export leaves no empty folder behind
            shutil.rmtree(build, ignore_errors=True)
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    path = out_dir / built.name
    return {"path": str(path), "config": str(out_dir / EXPORT_CONFIG), "format": fmt, "check": check,
            "bytes": path.stat().st_size, "kept": [str(p) for p in kept], "removed": [str(p) for p in removed]}
