"""cifarlab: train and study convolutional networks on CIFAR-10.

    cifarlab train --preset vgg3 epochs=2
"""
__version__ = "0.1.0"
