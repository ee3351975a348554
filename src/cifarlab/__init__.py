"""cifarlab: train and study convolutional networks on CIFAR-10.

    cifarlab train --preset vgg3 epochs=2

In a notebook:

    import cifarlab
    model = cifarlab.load("runs/vgg3-20261126-120000")   # a run, an export folder or file
    model.predict("photo.jpg")                           # [Prediction(photo.jpg: cat 0.62, ...)]
"""
import os

# OpenMP threads that spin while they wait for work collapse when the cores are shared
# (other processes, several runs of a study at once): measured on a busy 2-core machine,
# 17 img/s spinning vs 160-220 img/s sleeping for the same vgg3 step. Set before torch
# loads its OpenMP runtime; OMP_WAIT_POLICY=ACTIVE in the environment restores spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
