"""OpenMP thread count and wait policy for cifarlab's vgg3 step, each setting in a fresh process.

    PYTHONPATH=src python3 benchmarks/wait_policy.py --reps 2 --steps 5

OMP_WAIT_POLICY is read once, when torch loads its OpenMP runtime, so every setting
runs in its own process; settings alternate over --reps rounds. On an idle machine
spinning and sleeping are close; on shared cores spinning threads wait for each other.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = """
import sys, torch
from cifarlab.bench import VGG3, bench_config, CifarlabContender
torch.set_num_threads(int(sys.argv[1]))
c = CifarlabContender(bench_config(VGG3, [], 640), torch.device("cpu"))
c.run(2)
print(c.run(int(sys.argv[2])))
"""
SETTINGS = {"2 threads, ACTIVE": (2, "ACTIVE"), "2 threads, PASSIVE": (2, "PASSIVE"),
            "1 thread": (1, "PASSIVE")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    res = {k: [] for k in SETTINGS}
    for _ in range(args.reps):
        for k, (threads, policy) in SETTINGS.items():
            env = dict(os.environ, OMP_WAIT_POLICY=policy)
            out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.steps)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            res[k].append(float(out.split()[-1]))
    print(f"{'setting':<20} {'img/s':>7} {'min-max':>13}   (load average {os.getloadavg()[0]:.1f})")
    for k, v in res.items():
        print(f"{k:<20} {statistics.median(v):>7.0f} {min(v):>6.0f}-{max(v):<6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
