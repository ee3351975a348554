"""OpenMP thread count and wait policy for cifarlab's vgg3 step, each setting in a fresh process.

    PYTHONPATH=src python3 benchmarks/wait_policy.py --reps 2 --steps 5 [--load 4]

OMP_WAIT_POLICY is read once, when torch loads its OpenMP runtime, so every setting
runs in its own process; settings alternate over --reps rounds. On an idle machine
spinning and sleeping are close; on shared cores spinning threads wait for each other.
A short spin (GOMP_SPINCOUNT, libgomp's busy-wait iterations before a thread sleeps)
sits between the two. --load N starts N busy processes for the whole run, to stand for
other jobs on the same cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = """
import sys, torch
from cifarlab.bench.throughput import VGG3, bench_config, CifarlabContender
torch.set_num_threads(int(sys.argv[1]))
c = CifarlabContender(bench_config(VGG3, [], 640), torch.device("cpu"))
c.run(2)
print(c.run(int(sys.argv[2])))
"""
SETTINGS = {"2 threads, ACTIVE": (2, "ACTIVE", None), "2 threads, PASSIVE": (2, "PASSIVE", None),
            "2 threads, spin 20k": (2, "PASSIVE", "20000"), "1 thread": (1, "PASSIVE", None)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--load", type=int, default=0, help="busy processes to run alongside")
    args = ap.parse_args()
    res = {k: [] for k in SETTINGS}
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        for _ in range(args.reps):
            for k, (threads, policy, spin) in SETTINGS.items():
                env = {k2: v for k2, v in os.environ.items() if k2 != "GOMP_SPINCOUNT"}
                env.update(OMP_WAIT_POLICY=policy, **({"GOMP_SPINCOUNT": spin} if spin else {}))
                out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.steps)], env=env,
                                     capture_output=True, text=True, check=True).stdout
                res[k].append(float(out.split()[-1]))
    finally:
        for h in hogs:
            h.kill()
    print(f"{'setting':<20} {'img/s':>7} {'min-max':>13}   (load average {os.getloadavg()[0]:.1f})")
    for k, v in res.items():
        print(f"{k:<20} {statistics.median(v):>7.0f} {min(v):>6.0f}-{max(v):<6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
