"""Benchmarks: training throughput of cifarlab's step against a plain PyTorch loop and
Keras (throughput.py; Keras runs in keras_worker.py, a process of its own)."""
