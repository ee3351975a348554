"""The study's networks in Keras on TensorFlow, timed on request: the bench's Keras contender.

    python -m cifarlab.bench.keras_worker DATA.npz MODEL [bf16] [threads=N]   # MODEL: vgg3 or combined

It runs in its own process (TensorFlow and PyTorch would otherwise fight over the
same cores) and imports no torch. DATA.npz holds `x` (N, 32, 32, 3) uint8 and `y`.
It builds the model as the study did in Keras (he_uniform convs, SGD lr 0.001
momentum 0.9, batch 64; the combined model adds BN, dropout 0.2-0.5 and
RandomTranslation(0.1)/RandomFlip layers), prints `ready`, then answers each stdin
line `run STEPS` with one JSON line {"images_per_second": ..., "seconds": ...}: the
wall time of one `fit` call of STEPS steps (fit returns only once every step has run;
TensorFlow may run steps asynchronously, so per-batch callbacks would time dispatch,
not compute). The bench's warm-up call absorbs the graph tracing. It exits on `quit`
or end of input. `bf16` sets Keras's "mixed_bfloat16" policy (bf16 compute, fp32 weights);
`threads=N` gives TensorFlow N intra-op threads and one inter-op thread (the bench passes the
threads cifarlab computes on, so `--threads 1` holds one core against one core).
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # silence TensorFlow's start-up chatter


def build(model: str):
    import keras
    from keras import layers as L
    combined = model == "combined"
    rates = [0.2, 0.3, 0.4, 0.5] if combined else [0.0] * 4
    seq = [keras.Input((32, 32, 3))]
    if combined:
        seq += [L.RandomTranslation(0.1, 0.1, fill_mode="nearest"), L.RandomFlip("horizontal")]
    seq.append(L.Rescaling(1 / 255))
    for b, w in enumerate((32, 64, 128)):
        for _ in range(2):
            seq.append(L.Conv2D(w, 3, padding="same", activation="relu", kernel_initializer="he_uniform"))
            if combined:
                seq.append(L.BatchNormalization())
        seq.append(L.MaxPooling2D(2))
        if rates[b]:
            seq.append(L.Dropout(rates[b]))
    seq += [L.Flatten(), L.Dense(128, activation="relu", kernel_initializer="he_uniform")]
    if combined:
        seq += [L.BatchNormalization(), L.Dropout(rates[3])]
    seq.append(L.Dense(10, activation="softmax", dtype="float32"))  # fp32 softmax under mixed precision
    net = keras.Sequential(seq)
    net.compile(optimizer=keras.optimizers.SGD(0.001, momentum=0.9), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    return net


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    threads = [a for a in argv[2:] if a.startswith("threads=")]
    rest = [a for a in argv[2:] if a not in threads]
    if (len(argv) < 2 or argv[1] not in ("vgg3", "combined") or rest not in ([], ["bf16"]) or len(threads) > 1
            or (threads and not threads[0][8:].isdigit())):
        print("usage: python -m cifarlab.bench.keras_worker DATA.npz vgg3|combined [bf16] [threads=N]",
              file=sys.stderr)
        return 2
    import keras
    import numpy as np
    import tensorflow as tf
    if threads:  # as many cores as the contenders it is held against (TensorFlow's default: all)
        tf.config.threading.set_intra_op_parallelism_threads(int(threads[0][8:]))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if rest == ["bf16"]:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    d = np.load(argv[0])
    x, y = d["x"], d["y"].astype("int32")
    net = build(argv[1])
    print(json.dumps({"ready": True, "tensorflow": tf.__version__, "keras": keras.__version__,
                      "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                      "policy": keras.mixed_precision.global_policy().name}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        steps = int(cmd[1])
        t0 = time.perf_counter()
        net.fit(x, y, batch_size=64, epochs=1, steps_per_epoch=steps, shuffle=True, verbose=0)
        dt = time.perf_counter() - t0
        print(json.dumps({"images_per_second": steps * 64 / dt, "seconds": dt}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
