"""Use a trained model: load a run or an exported model, predict arrays or image files.

    import cifarlab
    model = cifarlab.load("runs/vgg3-20261126-120000")   # or an export folder, .safetensors, .onnx
    model.predict(["cat.jpg", "ship.png"])               # [Prediction(cat.jpg: cat 0.81, ...), ...]
    model.probs(x)                                       # (N, 10) probabilities; x uint8 (N, 32, 32, 3)
    model.evaluate(tta=True)                             # test accuracy, loss, per class

    cifarlab predict RUN_DIR photo.jpg other.png --top 3 [--json]

Images are read as the study's article reads its photo, Keras
`load_img(path, target_size=(32, 32))`, then scaled with the run's own normalisation.
A model loads on the CPU whatever device trained it; `device="auto"` uses a GPU only
when this machine has one. An export's weights are checked against the SHA-256 its
model.json records for them before they are loaded.
"""
from __future__ import annotations

import errno
import hashlib
import json
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .. import checkpoint, engine
from ..augment import normalize, tta_logits
from ..augment import tta_level as augment_tta_level
from ..config import ConfigError, from_dict, from_saved
from ..data import CLASSES
from ..errors import CifarlabError
from ..models import build_model
from ..runfolder import read_summary

SIZE = 32  # CIFAR-10 images are 32x32 pixels
EXPORT_CONFIG = "model.json"  # the exported model's description, beside its weights
WEIGHT_FILES = ("model.safetensors", "model.onnx")  # an export's weights, in the order a folder is loaded
_SHA256 = re.compile(r"[0-9a-f]{64}")
# model.json's format: 2 adds description_sha256 and requires it and `files`; 1 (or none) is an older
# export, loaded as before without them.
EXPORT_FORMAT_VERSION = 2
DESCRIBED = ("config", "norm", "classes", "tensors_sha256")  # what description_sha256 covers


def description_sha256(meta: dict) -> str:
    """SHA-256 of what in model.json a prediction depends on besides the weights file (DESCRIBED)."""
    return hashlib.sha256(json.dumps({k: meta.get(k) for k in DESCRIBED}, sort_keys=True).encode()).hexdigest()


class ImageError(CifarlabError, ValueError):
    """An input that is missing or not a readable image; the message names it."""


class ModelError(CifarlabError, ValueError):
    """A path that holds no model cifarlab can load; the message says what was expected."""


# --- images -----------------------------------------------------------------------------

def load_image(path) -> np.ndarray:
    """One image file as uint8 (32, 32, 3), RGB, exactly as Keras `load_img(path, target_size=(32, 32))`.

    Keras opens the file with Pillow, converts any other mode to RGB (an alpha channel is
    dropped, not composited), and resizes only when the size differs, with its default
    interpolation="nearest" (PIL.Image.NEAREST). EXIF orientation is ignored, as Keras does.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # Pillow decodes lazily: a truncated file fails here, not at open()
                out = _to_array(img)
        for w in caught:  # one line of ours, not Pillow's raw warning lines
            if issubclass(w.category, Image.DecompressionBombWarning):
                print(f"cifarlab: warning: {path}: a very large image ({img.width}x{img.height}, "
                      f"{img.width * img.height:,} pixels, over Pillow's {Image.MAX_IMAGE_PIXELS:,}); "
                      f"it was read and shrunk to {SIZE}x{SIZE}", file=sys.stderr)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return out
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(f"{path}: cannot be read: permission denied to this user; "
                         "give read access to the file or copy it somewhere readable") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (Pillow cannot identify its format)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused, too many pixels ({e})") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageError(f"{path}: is a symbolic link that loops (too many levels of links); "
                             "point it at a real image file") from None
        if e.errno is not None:  # the system's error reading the file, not Pillow's decoding
            raise ImageError(f"{path}: cannot be read: {e.strerror or e}") from None
        raise ImageError(f"{path}: damaged or truncated image ({e})") from None
    except (SyntaxError, ValueError) as e:  # damaged data: Pillow raises these too
        raise ImageError(f"{path}: damaged or truncated image ({e})") from None


def _to_array(img) -> np.ndarray:
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.NEAREST)
    return np.asarray(img, dtype=np.uint8)


def as_batch(x) -> tuple[torch.Tensor, list[str]]:
    """Images in any accepted form -> (uint8 tensor (N, 3, 32, 32), a name for each).

    Accepted: a path or a list of paths; a PIL image or a list of them; a numpy array or
    tensor of 0-255 pixels shaped (32, 32, 3), (N, 32, 32, 3) as Keras and Pillow give
    them, or (N, 3, 32, 32) as cifarlab's data set holds them. A list may mix paths and
    images. A bad file raises ImageError naming it.
    """
    if isinstance(x, (str, Path, Image.Image)):
        x = [x]
    if isinstance(x, (list, tuple)) and not all(isinstance(i, (str, Path, Image.Image)) for i in x):
        if any(isinstance(i, (str, Path, Image.Image)) for i in x):
            raise ImageError("a list holds either file paths and PIL images or arrays, not both")
        x = np.stack([np.asarray(i) for i in x])
    if isinstance(x, (list, tuple)):
        arrays = [load_image(i) if not isinstance(i, Image.Image) else _to_array(i) for i in x]
        names = [str(i) if not isinstance(i, Image.Image) else f"image[{n}]" for n, i in enumerate(x)]
        if not arrays:
            return torch.zeros(0, 3, SIZE, SIZE, dtype=torch.uint8), []
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), names
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or not ({a.shape[1:]} & {(SIZE, SIZE, 3), (3, SIZE, SIZE)}):
        raise ImageError(f"an array of images must be (32, 32, 3), (N, 32, 32, 3) or (N, 3, 32, 32); "
                         f"got shape {a.shape}. Pass image files to have them resized.")
    if a.shape[-1] == 3 and a.shape[1] != 3:
        a = a.transpose(0, 3, 1, 2)
    if a.dtype != np.uint8:
        if a.size and 0 < a.max() <= 1.0:
            warnings.warn("these pixel values are all within 0-1; cifarlab expects 0-255 (as Keras's "
                          "img_to_array gives) and applies the run's own normalisation", stacklevel=3)
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(a)), [f"array[{i}]" for i in range(len(a))]


# --- the model --------------------------------------------------------------------------

@dataclass
class Prediction:
    source: str  # file name, or image[i] / array[i]
    top: list  # [(class name, probability), ...], most likely first
    probs: np.ndarray = field(repr=False)  # (10,) probabilities

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def prob(self) -> float:
        return self.top[0][1]

    def as_dict(self) -> dict:
        return {"file": self.source, "top": [{"class": c, "prob": round(p, 6)} for c, p in self.top]}

    def __repr__(self) -> str:
        return f"Prediction({self.source}: " + ", ".join(f"{c} {p:.2f}" for c, p in self.top) + ")"


class Classifier:
    """A trained network with its normalisation, on one backend: torch or onnxruntime."""

    def __init__(self, config: dict, norm: dict, net=None, session=None, device="cpu", source="",
                 info: dict | None = None):
        self.config = config  # the run's resolved config, as a dict
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32)  # per channel, 0-1 scale
        self.std = torch.tensor(norm["std"], dtype=torch.float32)
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all() and (self.std > 0).all()):
            raise ModelError(f"{source}: its normalisation is damaged (mean {self.norm['mean']}, std "
                             f"{self.norm['std']}: each must be finite, each std above 0); use the run's "
                             f"checkpoint or export it again")
        self.classes = CLASSES
        self.net, self.session = net, session
        self.backend = "torch" if net is not None else "onnx"
        self.device = torch.device(device)
        self.source = str(source)
        self.info = info or {}  # where it came from: run folder, epoch, test accuracy

    def __repr__(self) -> str:
        return f"cifarlab.Classifier({self.config.get('name')!r} from {self.source}, {self.backend}, {self.device})"

    @property
    def norm(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def logits(self, x: torch.Tensor, batch_size: int = 1000, tta: int = 0) -> torch.Tensor:
        """Logits (float32, CPU) of a uint8 batch (N, 3, 32, 32); with `tta` (a level, as training's:
        0 none, 1 with the mirror, 2 also one-pixel shifts; see augment.tta_views), the log of the
        weighted mean of the views' probabilities, as engine.evaluate computes it. Outputs that are not
        finite (damaged weights, a diverged run) are a ModelError, not a prediction."""
        out = self._logits(x, batch_size, tta_level(tta))
        bad = int((~torch.isfinite(out).all(1)).sum())
        if bad:
            raise ModelError(f"{self.source}: the network's outputs are not finite (NaN or infinite) for {bad:,} "
                             f"of {len(out):,} images, so it predicts nothing: its weights are damaged or its "
                             f"run diverged; use another checkpoint or train the run again")
        return out

    def _logits(self, x: torch.Tensor, batch_size: int, tta: int) -> torch.Tensor:
        if self.backend == "torch":
            y = torch.zeros(len(x), dtype=torch.long, device=self.device)  # labels unused here
            return engine.evaluate(self.net, x.to(self.device), y, self.mean.to(self.device),
                                   self.std.to(self.device), batch_size, self.config.get("channels_last", True),
                                   None, tta)["logits"]
        onnx = lambda v: torch.from_numpy(self._run_onnx(v.contiguous().numpy()))  # noqa: E731
        out = [tta_logits(onnx, normalize(x[i:i + batch_size], self.mean, self.std), tta)
               for i in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def _run_onnx(self, xb: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.session.get_inputs()[0].name: xb.astype(np.float32)})[0]

    def probs(self, x, tta: int = 0) -> np.ndarray:
        """Class probabilities (N, 10) of images in any form `as_batch` accepts."""
        batch, _ = as_batch(x)
        if len(batch) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.logits(batch, tta=tta).softmax(1).numpy()

    def predict(self, x, top: int = 3, tta: int = 0) -> list[Prediction]:
        """One Prediction per image, with the `top` most likely classes."""
        batch, names = as_batch(x)
        if len(batch) == 0:
            return []
        p = self.logits(batch, tta=tta).softmax(1).numpy()
        return [prediction(n, row, top, self.classes) for n, row in zip(names, p)]

    def evaluate(self, tta: int = 0, data=None) -> dict:
        """Accuracy and loss on the CIFAR-10 test set, per class and as a confusion matrix."""
        from .evaluate import evaluate_model  # here: it draws with matplotlib, which predicting needs not
        return evaluate_model(self, tta=tta, data=data)


def tta_level(tta) -> int:
    """augment.tta_level, a bad level being a ModelError (one line)."""
    try:
        return augment_tta_level(tta)
    except ValueError as e:
        raise ModelError(str(e)) from None


def own_tta(model) -> int:
    """The level the model's run tested with (its config's tta), 1 (the mirror) where it used none."""
    return int(model.config.get("tta") or 0) or 1


def prediction(name: str, p: np.ndarray, k: int, classes) -> Prediction:
    order = np.argsort(-p, kind="stable")[:max(1, k)]
    return Prediction(name, [(classes[i], float(p[i])) for i in order], p)


# --- loading ----------------------------------------------------------------------------

def load(path, device: str = "auto") -> Classifier:
    """A run folder (its checkpoint.pt), a checkpoint file, an export folder, or an exported
    model.safetensors / model.onnx with its model.json beside it."""
    path = Path(path)
    if path.is_dir():
        if (path / "checkpoint.pt").is_file():
            return load_checkpoint(path / "checkpoint.pt", device)
        if (path / EXPORT_CONFIG).is_file():
            listed = _read_meta(path / EXPORT_CONFIG).get("files")  # None: an export older than the list
            for name in WEIGHT_FILES:
                if (listed is None or name in listed) and (path / name).is_file():
                    return load(path / name, device)
            if listed is None:
                raise ModelError(f"{path} has {EXPORT_CONFIG} but neither model.safetensors nor model.onnx")
            raise ModelError(f"{path}: the weights {EXPORT_CONFIG} lists ({', '.join(listed)}) are missing; "
                             f"export the run again with `cifarlab export`")
        raise ModelError(f"{path} is neither a run folder (no checkpoint.pt; has the run finished "
                         f"its first epoch?) nor an export folder (no {EXPORT_CONFIG})")
    if not path.exists():
        raise ModelError(f"{path}: no such run folder or model file")
    if path.suffix == ".pt":
        return load_checkpoint(path, device)
    if path.suffix in (".safetensors", ".onnx"):
        return load_export(path, device)
    raise ModelError(f"{path}: not a model cifarlab reads; give a run folder, an export folder, "
                     f"or a .pt, .safetensors or .onnx file")


def _place(net: torch.nn.Module, config: dict, device: str) -> tuple[torch.nn.Module, torch.device]:
    try:
        dev = engine.pick_device(device)  # "auto": CUDA only when this machine has it, whatever trained the model
    except RuntimeError as e:
        raise ModelError(str(e).replace("device=", "--device ").replace("use --device cpu", "use --device cpu "
                                                                        "or auto")) from None
    net = net.to(dev)
    if config.get("channels_last", True):  # the memory format the run trained and tested in
        net = net.to(memory_format=torch.channels_last)
    return net.eval(), dev


def load_checkpoint(path, device: str = "auto") -> Classifier:
    state = checkpoint.read(path)  # map_location="cpu": GPU-written tensors land on the CPU
    from_saved(state["config"], path)  # a bad saved config is an error naming the checkpoint
    net = checkpoint.model_from_checkpoint(state, path)  # weights that do not fit: one line naming the file
    net, dev = _place(net, state["config"], device)
    norm = state.get("norm") or _summary_norm(Path(path).parent) or _scale_norm(state["config"], path)
    info = {"run": str(Path(path).parent), "epoch": state.get("epoch"), "epochs": state["config"].get("epochs")}
    return Classifier(state["config"], norm, net=net, device=dev, source=path, info=info)


def _summary_norm(run_dir: Path) -> dict | None:
    return read_summary(run_dir).get("norm") if (run_dir / "summary.json").is_file() else None


def _scale_norm(config: dict, path) -> dict:
    if config.get("norm", "scale") != "scale":
        raise ModelError(f"{path} records no normalisation statistics for norm={config['norm']}")
    return {"mean": [0.0] * 3, "std": [1.0] * 3}  # pixels / 255


def load_export(path, device: str = "auto") -> Classifier:
    """model.safetensors (torch) or model.onnx (onnxruntime), described by model.json beside it."""
    path = Path(path)
    meta_path = path.with_name(EXPORT_CONFIG)
    if not meta_path.is_file():
        raise ModelError(f"{path}: {EXPORT_CONFIG} (the model's config and normalisation) is missing "
                         f"beside it; export again with `cifarlab export`")
    meta = _read_meta(meta_path)
    info = {k: meta.get(k) for k in ("run", "epoch", "test_acc")}
    again = "export the run again with `cifarlab export`"
    blob = _verified_weights(path, meta, meta_path, again)  # None: an export older than the SHA-256 record
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError("running an ONNX model needs onnxruntime: pip install 'cifarlab[export]'") from None
        try:
            session = ort.InferenceSession(blob if blob is not None else str(path),
                                           providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own InvalidProtobuf, Fail, ...
            raise ModelError(f"{path}: not a readable ONNX model, truncated or damaged "
                             f"({_first_line(e)}); {again}") from None
        return Classifier(meta["config"], meta["norm"], session=session, device="cpu", source=path, info=info)
    try:
        from safetensors.torch import load as load_bytes, load_file
    except ImportError:
        raise ModelError("reading safetensors needs the safetensors package: pip install 'cifarlab[export]'") \
            from None
    net = build_model(_meta_config(meta, meta_path))
    try:
        net.load_state_dict(load_bytes(blob) if blob is not None else load_file(str(path), device="cpu"))
    except Exception as e:  # safetensors' SafetensorError for a damaged file, RuntimeError for other weights
        raise ModelError(f"{path}: cannot load these weights into the network {meta_path.name} describes, "
                         f"the file is truncated, damaged or from another model ({_first_line(e)}); "
                         f"{again}") from None
    net, dev = _place(net, meta["config"], device)
    return Classifier(meta["config"], meta["norm"], net=net, device=dev, source=path, info=info)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _verified_weights(path: Path, meta: dict, meta_path: Path, again: str) -> bytes | None:
    """The bytes of `path`, checked against the SHA-256 that model.json records for it (read once,
    so what is checked is what is loaded); None where model.json records none (older exports)."""
    files = meta.get("files")
    if files is None:
        return None
    if path.name not in files:
        raise ModelError(f"{path}: not the weights {meta_path.name} beside it describes (it lists "
                         f"{', '.join(files)}): a file left from another export; {again}")
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read it ({e.strerror or e})") from None
    got, want = hashlib.sha256(blob).hexdigest(), files[path.name]["sha256"]
    if got != want:
        raise ModelError(f"{path}: its SHA-256 is {got}, not the {want} that {meta_path.name} records: these are "
                         f"not the weights exported with it (changed, truncated or copied from another export); "
                         f"{again}")
    return blob


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _read_meta(path: Path) -> dict:
    """An export's model.json, checked for what loading it needs."""
    again = "export the run again with `cifarlab export`"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({_first_line(e)}); {again}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: holds a {type(meta).__name__}, not the model's description; {again}")
    missing = [k for k in ("config", "norm") if not isinstance(meta.get(k), dict)]
    if missing:
        raise ModelError(f"{path}: no {' or '.join(missing)} in it; {again}")
    norm = meta["norm"]
    if not all(isinstance(norm.get(k), list) and len(norm[k]) == 3 for k in ("mean", "std")):
        raise ModelError(f"{path}: norm must give three numbers each for mean and std; {again}")
    files = meta.get("files")
    if files is not None and not (isinstance(files, dict) and files and all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and _SHA256.fullmatch(v["sha256"])
            for v in files.values())):
        raise ModelError(f"{path}: files must map each weights file to its sha256 (64 hex digits); {again}")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= EXPORT_FORMAT_VERSION:
        raise ModelError(f"{path}: format_version {version!r} is not one this cifarlab reads (1 to "
                         f"{EXPORT_FORMAT_VERSION}); use the cifarlab version that wrote it, or {again}")
    if version >= 2:  # an export that records its digests: without them it is damaged, not older
        if files is None or "description_sha256" not in meta:
            raise ModelError(f"{path}: damaged: format_version {version} records files and description_sha256, "
                             f"and this one lacks {'files' if files is None else 'description_sha256'}; {again}")
        if meta["description_sha256"] != description_sha256(meta):
            raise ModelError(f"{path}: damaged: its {', '.join(DESCRIBED[:3])} or tensors_sha256 differ from the "
                             f"description_sha256 it was exported with; {again}")
    _meta_config(meta, path)
    return meta


def _meta_config(meta: dict, path: Path):
    try:
        return from_dict(meta["config"])
    except ConfigError as e:
        raise ModelError(f"{path}: its config is not one cifarlab reads ({e})") from None


# --- the `predict` verb -----------------------------------------------------------------
