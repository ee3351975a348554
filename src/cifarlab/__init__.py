"""cifarlab: train and study convolutional networks on CIFAR-10.

    cifarlab train --preset vgg3 epochs=2
"""
import os

# OpenMP threads that spin while they wait for work collapse when the cores are shared
# (other processes, several runs of a study at once): measured on a busy 2-core machine,
# 17 img/s spinning vs 160-220 img/s sleeping for the same vgg3 step. Set before torch
# loads its OpenMP runtime; OMP_WAIT_POLICY=ACTIVE in the environment restores spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
