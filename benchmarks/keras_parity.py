"""Does cifarlab take the study's training steps as Keras takes them? Step for step, same start.

    python benchmarks/keras_parity.py --data DATA [--preset weight_decay] [--at 1,5,20]
        [--keras-python PY] [--out FILE.json]

cifarlab builds the preset's network (its own initialisation, seed from the preset), and
Keras, in a process of its own that imports no torch, builds the study's network with the
same layers, is given the very same weights, and both take the same SGD steps on the same
real training batches (the first images of data_batch_1.., in file order, scaled to 0-1
exactly as cifarlab feeds them), up to the last of `--at`. cifarlab's step is its own
`train_step` (loss, Keras-style L2 penalty, SGD with momentum); Keras's is `train_on_batch`
of a model compiled as the study compiled it (`kernel_regularizer=l2(c)` on every conv and
the hidden dense kernel, SGD(lr, momentum), sparse categorical cross-entropy on softmax).

Printed and written: the largest difference of the two losses (the L2 penalty included) up
to each step of `--at`, and there, for each layer, how far the two networks' weights are
apart as a fraction of how far they moved from the start (`gap / moved`). Training is
chaotic: float32 rounding (two libraries' convolution kernels) grows step by step, so the
gaps of even identical semantics reach tens of percent after a few hundred steps; the
first steps are the test. Two controls run beside the preset, so that the
check shows what a semantic difference would look like: cifarlab with half the L2 factor
(what `torch.optim.SGD(weight_decay=c)` amounts to, since the gradient of c*w^2 is 2cw) and
with none. The preset matches Keras when its gaps are at the level of float32 rounding and
the controls' are not.

Only networks whose steps are deterministic qualify: no dropout, no augmentation, no batch
norm (vgg1, vgg2, vgg3, weight_decay).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

KERAS_SIDE = r'''
import os, sys, json
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
d = np.load(sys.argv[1])
spec = json.loads(str(d["spec"]))
sys.path.insert(0, spec["benchmarks"])
from keras_reference import build
net = build(**spec["net"])
params = [d[f"w{i}"] for i in range(spec["n_weights"])]
net.set_weights(params)
x, y, B = d["x"], d["y"].astype("int32"), spec["batch"]
losses, saved = [], {}
for s in range(max(spec["at"])):
    out = net.train_on_batch(x[s * B:(s + 1) * B], y[s * B:(s + 1) * B], return_dict=True)
    losses.append(float(out["loss"]))
    if s + 1 in spec["at"]:
        saved.update({f"s{s + 1}w{i}": w for i, w in enumerate(net.get_weights())})
np.savez(sys.argv[2], losses=np.array(losses), **saved)
import keras
print(json.dumps({"tensorflow": tf.__version__, "keras": keras.__version__}))
'''


def keras_layout(model) -> list:
    """The VGG's weights in Keras's order and layout: conv kernels (kh, kw, in, out), dense
    kernels (in, out) with the first dense's inputs in Keras's (h, w, c) flatten order."""
    import torch.nn as nn
    out = []
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    for m in convs:
        out += [m.weight.detach().permute(2, 3, 1, 0).numpy(), m.bias.detach().numpy()]
    dense = [m for m in model.head if isinstance(m, nn.Linear)]
    c = convs[-1].out_channels
    side = int(round((dense[0].in_features // c) ** 0.5))
    w0 = dense[0].weight.detach().view(-1, c, side, side).permute(2, 3, 1, 0).reshape(-1, dense[0].out_features)
    out += [w0.numpy(), dense[0].bias.detach().numpy()]
    out += [dense[1].weight.detach().T.numpy(), dense[1].bias.detach().numpy()]
    return [a.copy() for a in out]


def layer_names(model) -> list[str]:
    import torch.nn as nn
    names = [f"conv{i + 1}" for i, m in enumerate(m for m in model.features if isinstance(m, nn.Conv2d))]
    return names + ["dense", "output"]


def torch_run(cfg, data, x, y, at: list[int]):
    """cifarlab's own training step on the batches; returns (initial weights, losses,
    {step: weights} at the steps of `at`, the model)."""
    import torch
    from cifarlab.augment import normalize
    from cifarlab.engine import build_training, train_step
    torch.manual_seed(cfg.seed)
    model, fwd, opt = build_training(cfg, torch.device("cpu"))
    start = keras_layout(model)
    B = cfg.batch_size
    losses, saved = [], {}
    for s in range(max(at)):
        xb = normalize(x[s * B:(s + 1) * B], data["mean"], data["std"])
        loss, _ = train_step(model, fwd, opt, xb, y[s * B:(s + 1) * B], cfg, cfg.lr)
        losses.append(float(loss))
        if s + 1 in at:
            saved[s + 1] = keras_layout(model)
    return start, losses, saved, model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("CIFARLAB_DATA"), help="CIFAR-10 folder or archive")
    ap.add_argument("--preset", default="weight_decay", choices=["vgg1", "vgg2", "vgg3", "weight_decay"])
    ap.add_argument("--at", default="1,5,20", help="compare after these steps (comma-separated)")
    ap.add_argument("--keras-python", default=sys.executable, help="a Python with cifarlab[keras] (TensorFlow)")
    ap.add_argument("--out", help="write the figures here as JSON")
    a = ap.parse_args(argv)
    at = sorted({int(v) for v in a.at.split(",")})
    if at[0] < 1:
        ap.error("--at: steps from 1")

    import dataclasses

    import numpy as np
    import torch
    from cifarlab.config import load_preset
    from cifarlab.data import load_cifar10
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keras_reference import study_network  # the Keras network of a preset, and what Keras's fit can't express
    torch.set_num_threads(1)
    cfg = dataclasses.replace(load_preset(a.preset), threads=1)
    net = study_network(cfg)
    if any(net["rates"]):
        sys.exit(f"{a.preset}: dropout makes its steps random, not a preset to compare step by step")
    n = at[-1] * cfg.batch_size
    ds = load_cifar10(a.data)
    x = torch.from_numpy(np.ascontiguousarray(ds.x_train[:n]))
    y = torch.from_numpy(np.ascontiguousarray(ds.y_train[:n])).long()
    data = {"mean": torch.zeros(3), "std": torch.ones(3)}

    runs = {}
    for label, l2 in ((f"{a.preset} (l2={cfg.l2:g})", cfg.l2), (f"control: l2={cfg.l2 / 2:g}", cfg.l2 / 2),
                      ("control: l2=0", 0.0)):
        if label.startswith("control") and not cfg.l2:
            continue
        runs[label] = torch_run(dataclasses.replace(cfg, l2=l2), data, x, y, at)
    start, _, _, model = runs[next(iter(runs))]
    names = layer_names(model)

    xk = normalize_for_keras(x, data)
    spec = {"net": net, "batch": cfg.batch_size, "at": at, "n_weights": len(start),
            "benchmarks": str(Path(__file__).resolve().parent)}
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(inp, spec=json.dumps(spec), x=xk, y=y.numpy(), **{f"w{i}": w for i, w in enumerate(start)})
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        p = subprocess.run([a.keras_python, "-c", KERAS_SIDE, str(inp), str(outp)], capture_output=True,
                           text=True, env=env)
        if p.returncode:
            sys.exit(f"the Keras side failed ({a.keras_python}; needs `pip install 'cifarlab[keras]'`):\n"
                     f"{p.stderr[-2000:]}")
        versions = json.loads(p.stdout.strip().splitlines()[-1])
        k = np.load(outp)
        k_losses = k["losses"]
        k_at = {s: [k[f"s{s}w{i}"] for i in range(len(start))] for s in at}

    result = {"preset": a.preset, "at": at, "batch": cfg.batch_size, "seed": cfg.seed,
              "torch": torch.__version__, **versions, "keras_losses": k_losses.tolist(), "runs": {}}
    for label, (_, losses, saved, _) in runs.items():
        dl = np.abs(np.array(losses) - k_losses)
        rows = []
        for s in at:
            gaps = {}
            for i, name in enumerate(names):
                w = 2 * i  # kernels only: biases follow them
                moved = np.linalg.norm(k_at[s][w] - start[w])
                gaps[name] = float(np.linalg.norm(saved[s][w] - k_at[s][w]) / moved)
            rows.append({"step": s, "loss": [losses[s - 1], float(k_losses[s - 1])],
                         "max_loss_gap": float(dl[:s].max()), "gap_over_moved": gaps})
        result["runs"][label] = {"losses": losses, "at": rows}
    print(render(result))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def normalize_for_keras(x, data):
    """The float input cifarlab trains on, in Keras's (N, H, W, C) layout: the very same numbers."""
    from cifarlab.augment import normalize
    return normalize(x, data["mean"], data["std"]).permute(0, 2, 3, 1).contiguous().numpy()


def render(r: dict) -> str:
    lines = [f"{r['preset']}: SGD steps of batch {r['batch']} from the same weights on the same batches "
             f"(torch {r['torch']}, TensorFlow {r['tensorflow']}, Keras {r['keras']})", ""]
    names = list(next(iter(r["runs"].values()))["at"][0]["gap_over_moved"])
    lines.append("| cifarlab run | after step | loss (ours / Keras) | max loss gap so far | "
                 + " | ".join(names) + " |")
    lines.append("| --- | ---: | --- | ---: | " + " | ".join("---:" for _ in names) + " |")
    for label, v in r["runs"].items():
        for row in v["at"]:
            lines.append(f"| {label} | {row['step']} | {row['loss'][0]:.5f} / {row['loss'][1]:.5f} | "
                         f"{row['max_loss_gap']:.1e} | "
                         + " | ".join(f"{g:.1e}" for g in row["gap_over_moved"].values()) + " |")
    lines += ["", "Layer columns: distance between the two networks' kernels over the distance Keras's moved "
              "from the start."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
