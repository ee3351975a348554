"""cifarlab: train and study convolutional networks on CIFAR-10.

    cifarlab train --preset vgg3 epochs=2

In a notebook:

    import cifarlab
    model = cifarlab.load("runs/vgg3-20261126-120000")   # a run, an export folder or file
    model.predict("photo.jpg")                           # [Prediction(photo.jpg: cat 0.62, ...)]

Importing the package changes nothing in the process: the engine settings the command
applies (OpenMP waiting, malloc) are in `cifarlab.runtime`, with their opt-outs.
"""
__version__ = "0.1.0"

# Loaded on first use, so `import cifarlab` stays quick and torch-free.
_LAZY = {"load": "inference.predict", "load_image": "inference.predict", "Classifier": "inference.predict",
         "Prediction": "inference.predict"}


def __getattr__(name):
    if name in _LAZY:
        import importlib  # here, so dir(cifarlab) lists the package's own names only
        return getattr(importlib.import_module(f"cifarlab.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
