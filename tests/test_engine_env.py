"""The engine settings (OpenMP waiting, malloc): applied by the `cifarlab` command and by
`cifarlab.runtime.apply()`, never by `import cifarlab` alone; each with its opt-out."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test here starts other processes

SHOW = "print(os.environ.get('OMP_WAIT_POLICY', '-'), os.environ.get('GOMP_SPINCOUNT', '-'), runtime.malloc_tuned())"


def probe(code: str, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "CIFARLAB_MALLOC")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", f"import os; from cifarlab import runtime; {code}; {SHOW}"],
                         env=full, capture_output=True, text=True, check=True)
    return out.stdout.split()[-3:]


glibc = pytest.mark.skipif("glibc" not in (getattr(os, "confstr", lambda _: "")("CS_GNU_LIBC_VERSION") or ""),
                           reason="malloc tuning is glibc-only")


def test_import_changes_nothing_in_the_process():
    assert probe("import cifarlab, cifarlab.config") == ["-", "-", "False"]


@glibc
def test_apply_keeps_freed_memory_and_sleeps_waiting_threads():
    assert probe("runtime.apply()") == ["PASSIVE", "20000", "True"]


@glibc
def test_the_command_applies_both():
    assert probe("from cifarlab.cli import main; main(['presets'])") == ["PASSIVE", "20000", "True"]


@glibc
def test_the_environment_can_restore_both_defaults():
    # a policy the user chose is kept whole: no spin count is added to it
    assert probe("runtime.apply()", OMP_WAIT_POLICY="ACTIVE", CIFARLAB_MALLOC="system") == ["ACTIVE", "-", "False"]
