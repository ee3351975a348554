"""cifarlab: train and study convolutional networks on CIFAR-10.

    cifarlab train --preset vgg3 epochs=2

In a notebook:

    import cifarlab
    model = cifarlab.load("runs/vgg3-20261126-120000")   # a run, an export folder or file
    model.predict("photo.jpg")                           # [Prediction(photo.jpg: cat 0.62, ...)]
"""
import os

# OpenMP threads that spin while they wait for work collapse when the cores are shared
# (other processes, several runs of a study at once): on a busy 2-core machine the same
# vgg3 step ran at 21 img/s spinning vs 145 sleeping (benchmarks/wait_policy.py). Set
# before torch loads its OpenMP runtime; OMP_WAIT_POLICY=ACTIVE restores spinning.
# A short spin before sleeping (GOMP_SPINCOUNT, libgomp's busy-wait iterations) keeps
# most of spinning's speed on idle cores without the collapse on shared ones: vgg3 in
# bf16 at 2,815-2,868 img/s vs 2,663-2,756 with no spin on an idle machine; with six
# busy processes beside it, fp32 at 276 img/s vs 287 with no spin and 130 spinning.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ.setdefault("GOMP_SPINCOUNT", "20000")


def _keep_freed_memory() -> bool:
    """Keep freed blocks in the process instead of returning them to the system (glibc only).

    A training step frees and re-allocates the same activation-sized blocks (1-4 MB at
    batch 64) every step. glibc's defaults serve blocks that size with fresh mmaps or
    trim them off the heap when freed, so every step pays page faults on memory it has
    just given back: on the 2-core Zen 5, vgg3 trained at 2,350 img/s in bf16 with the
    defaults and 2,760-2,800 with blocks under 32 MB kept on the heap and no trimming
    (fp32 +3%, the combined model +7-9%). The cost is that the process keeps its peak
    heap. CIFARLAB_MALLOC=system leaves glibc's defaults alone.
    """
    if os.environ.get("CIFARLAB_MALLOC", "").lower() == "system" or not hasattr(os, "confstr"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "mallopt") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
            return False
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) and libc.mallopt(M_MMAP_THRESHOLD, 32 << 20))
    except (OSError, ValueError, AttributeError):
        return False


MALLOC_TUNED = _keep_freed_memory()

__version__ = "0.1.0"

# Loaded on first use, so `import cifarlab` stays quick and torch-free.
_LAZY = {"load": "predict", "load_image": "predict", "Model": "predict", "Prediction": "predict"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"cifarlab.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
