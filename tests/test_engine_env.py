"""What `import cifarlab` sets up for the engine before torch runs: OpenMP waiting and malloc."""
import os
import subprocess
import sys

import pytest

PROBE = ("import cifarlab, os; "
         "print(os.environ['OMP_WAIT_POLICY'], os.environ.get('GOMP_SPINCOUNT', '-'), cifarlab.MALLOC_TUNED)")


def probe(**env):
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "CIFARLAB_MALLOC")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, check=True)
    return out.stdout.split()


glibc = pytest.mark.skipif("glibc" not in (getattr(os, "confstr", lambda _: "")("CS_GNU_LIBC_VERSION") or ""),
                           reason="malloc tuning is glibc-only")


@glibc
def test_import_keeps_freed_memory_and_sleeps_waiting_threads():
    assert probe() == ["PASSIVE", "20000", "True"]


@glibc
def test_the_environment_can_restore_both_defaults():
    # a policy the user chose is kept whole: no spin count is added to it
    assert probe(OMP_WAIT_POLICY="ACTIVE", CIFARLAB_MALLOC="system") == ["ACTIVE", "-", "False"]
