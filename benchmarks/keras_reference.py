"""The study's network trained by Keras itself, epoch after epoch: a reference run to hold
cifarlab's run of the same preset against.

    python benchmarks/keras_reference.py --data DATA --preset weight_decay --out DIR
        [--epochs N] [--seed S] [--threads 1] [--subset N] [--against RUN_DIR]

Keras 3 on TensorFlow, in a process that imports no torch (`pip install 'cifarlab[keras]'`),
builds the network the study built (he_uniform convs, 'same' padding, ReLU, max-pool, Dense
128, softmax; the preset's dropout and `kernel_regularizer=l2(c)`), compiles it with
SGD(lr, momentum) and sparse categorical cross-entropy, and fits it on the whole training
set (pixels / 255, batch 64, shuffled each epoch, the last partial batch kept, as
`model.fit` does), measuring the test set after every epoch as the study did. Presets: those
whose training Keras's `fit` expresses as the study wrote it: vgg1, vgg2, vgg3, dropout,
weight_decay (the augmentation presets used ImageDataGenerator, which Keras 3 no longer has).

DIR gets `metrics.csv` (cifarlab's columns: epoch, train_loss, train_acc, val_loss,
val_acc, epoch_seconds), `summary.json` (test accuracy, device, versions, the command),
`curves.png`, and with `--against RUN_DIR` (a cifarlab run of the preset) `against.png`, the
two validation curves on one axis. `keras_state.keras` (weights and optimiser) is the
checkpoint, written after every epoch: the same command continues an interrupted run from
its last epoch (and a larger --epochs extends a finished one). Each epoch's shuffle and
dropout masks draw from a seed of its own (seed, epoch), so a resumed run takes the same
steps as one that never stopped.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # silence TensorFlow's start-up chatter

PRESETS = ("vgg1", "vgg2", "vgg3", "dropout", "weight_decay")
COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds")


def build(widths, dense: int, rates, l2: float, lr: float, momentum: float, init: str = "he_uniform"):
    """The study's VGG in Keras: two 3x3 convs and a max-pool per width, Dense `dense`, softmax.
    rates: dropout after each pool, then after the dense layer (0: none)."""
    import keras
    from keras import layers as L
    reg = (lambda: keras.regularizers.L2(l2)) if l2 else (lambda: None)
    seq = [keras.Input((32, 32, 3))]
    for b, w in enumerate(widths):
        for _ in range(2):
            seq.append(L.Conv2D(w, 3, padding="same", activation="relu", kernel_initializer=init,
                                kernel_regularizer=reg()))
        seq.append(L.MaxPooling2D(2))
        if rates[b]:
            seq.append(L.Dropout(rates[b]))
    seq += [L.Flatten(), L.Dense(dense, activation="relu", kernel_initializer=init, kernel_regularizer=reg())]
    if rates[-1]:
        seq.append(L.Dropout(rates[-1]))
    seq.append(L.Dense(10, activation="softmax"))
    net = keras.Sequential(seq)
    net.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    return net


def study_network(cfg):
    """build()'s arguments for a cifarlab preset config, or SystemExit naming what Keras's fit can't express."""
    unlike = [k for k, ok in (("model", cfg.model == "vgg"), ("batchnorm", not cfg.batchnorm),
                              ("augment", cfg.augment == "none"), ("norm", cfg.norm == "scale"),
                              ("optimizer", cfg.optimizer == "sgd"), ("schedule", cfg.schedule == "constant"),
                              ("nesterov", not cfg.nesterov), ("weight_decay", not cfg.weight_decay),
                              ("label_smoothing", not cfg.label_smoothing), ("drop_last", not cfg.drop_last))
              if not ok]
    if unlike:
        sys.exit(f"{cfg.name}: {', '.join(unlike)} not as the Keras reference trains; presets: {', '.join(PRESETS)}")
    widths = list(cfg.widths[:cfg.blocks])
    rates = [float(r) for r in cfg.dropout] if isinstance(cfg.dropout, (list, tuple)) \
        else [float(cfg.dropout)] * (cfg.blocks + 1)
    return dict(widths=widths, dense=cfg.dense, rates=rates, l2=cfg.l2, lr=cfg.lr, momentum=cfg.momentum)


def reseed(net, seed: int) -> None:
    """This epoch's shuffle (the global seed) and dropout masks (each layer's seed generator,
    whose state the saved model does not keep) from `seed` alone."""
    import keras
    import numpy as np
    keras.utils.set_random_seed(seed)
    for i, layer in enumerate(net.layers):
        if getattr(layer, "seed_generator", None) is not None:
            layer.seed_generator.state.assign(np.array([seed * 31 + i, 0], dtype="int64"))


def write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("CIFARLAB_DATA"), help="CIFAR-10 folder or archive")
    ap.add_argument("--preset", default="weight_decay", choices=PRESETS)
    ap.add_argument("--out", required=True, help="the run's folder (created; an existing one is continued)")
    ap.add_argument("--epochs", type=int, help="default: the preset's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow's intra-op threads")
    ap.add_argument("--subset", type=int, default=0, help="train on a class-balanced subset (a quick check)")
    ap.add_argument("--against", help="a cifarlab run folder of the same preset, for against.png")
    a = ap.parse_args(argv)

    import numpy as np
    from cifarlab import plots
    from cifarlab.config import load_preset
    from cifarlab.data import load_cifar10, subset_indices
    from cifarlab.machine import cpu_name
    from cifarlab.runfolder import read_metrics
    cfg = load_preset(a.preset)
    spec = study_network(cfg)
    epochs = a.epochs or cfg.epochs
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    state, metrics = out / "keras_state.keras", out / "metrics.csv"
    settings = {"preset": a.preset, "seed": a.seed, "subset": a.subset}  # --epochs may grow
    saved = out / "settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        sys.exit(f"{out} holds a run with other settings ({saved.read_text().strip()}); "
                 f"give another --out, or the same settings to continue it")
    saved.write_text(json.dumps(settings) + "\n")

    ds = load_cifar10(a.data)
    idx = subset_indices(ds.y_train, a.subset, a.seed) if a.subset else np.arange(len(ds.y_train))
    nhwc = lambda v: np.ascontiguousarray(v.transpose(0, 2, 3, 1)).astype("float32") / 255.0  # noqa: E731
    x, y = nhwc(ds.x_train[idx]), ds.y_train[idx].astype("int32")
    xt, yt = nhwc(ds.x_test), ds.y_test.astype("int32")

    import keras
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rows = read_metrics(out) if metrics.is_file() else []
    if rows and state.is_file():
        net = keras.models.load_model(state)
        print(f"{out}: continuing after epoch {len(rows)} of {epochs}", flush=True)
    else:
        rows = []
        keras.utils.set_random_seed(a.seed)
        net = build(**spec)
    started = time.time()
    for epoch in range(len(rows) + 1, epochs + 1):
        reseed(net, a.seed * 100_003 + epoch)
        t0 = time.perf_counter()
        h = net.fit(x, y, batch_size=cfg.batch_size, epochs=1, shuffle=True, verbose=0).history
        val_loss, val_acc = net.evaluate(xt, yt, batch_size=1000, verbose=0)
        rows.append({"epoch": epoch, "train_loss": h["loss"][-1], "train_acc": h["accuracy"][-1],
                     "val_loss": val_loss, "val_acc": val_acc, "epoch_seconds": time.perf_counter() - t0})
        tmp = out / "keras_state.tmp.keras"
        net.save(tmp)
        os.replace(tmp, state)
        write_rows(metrics, rows)
        r = rows[-1]
        print(f"epoch {epoch:4d}/{epochs}  loss {r['train_loss']:.4f}  acc {r['train_acc']:.4f}  "
              f"val_loss {r['val_loss']:.4f}  val_acc {r['val_acc']:.4f}  {r['epoch_seconds']:.0f}s", flush=True)

    last = rows[-1]
    summary = {"preset": a.preset, "framework": "keras", "epochs": epochs, "seed": a.seed, "subset": a.subset,
               "images": len(y), "test_acc": last["val_acc"], "test_loss": last["val_loss"],
               "best_val_acc": max(r["val_acc"] for r in rows),
               "wall_seconds": sum(r["epoch_seconds"] for r in rows),
               "device": f"cpu ({cpu_name()}, {a.threads} threads)", "reference": dict(cfg.reference),
               "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                            "python": platform.python_version()},
               "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plots.curves(rows, out / "curves.png", title=f"Keras {keras.__version__}: {a.preset}, {epochs} epochs")
    if a.against:
        if not (Path(a.against) / "metrics.csv").is_file():
            sys.exit(f"--against {a.against}: no metrics.csv there")
        theirs = read_metrics(a.against)
        plots.overlay({f"Keras {keras.__version__}": rows, "cifarlab": theirs}, out / "against.png",
                      title=f"{a.preset}: test accuracy per epoch")
    print(f"{out}: test_acc {last['val_acc']:.4f} after {epochs} epochs "
          f"({time.time() - started:.0f} s this session)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
