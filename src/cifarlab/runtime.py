"""Engine settings for the process: how idle OpenMP threads wait, and how freed memory is kept.

Nothing here runs on `import cifarlab`. The `cifarlab` command applies both settings before
it loads torch (`cli.main`); `train()` keeps freed memory (the part that works at any time).
In a notebook or script, call `cifarlab.runtime.apply()` before the first `import torch`
to get what the command gets.

- OpenMP threads that spin while they wait for work collapse when the cores are shared
  (other processes, several runs of a study at once); threads that sleep do not. A short
  spin before sleeping (GOMP_SPINCOUNT, libgomp's busy-wait iterations) keeps most of
  spinning's speed on idle cores. Set before torch loads its OpenMP runtime. Opt out:
  set OMP_WAIT_POLICY yourself (ACTIVE restores spinning); a policy you chose is kept
  whole, with no spin count added.
- A training step frees and re-allocates the same activation-sized blocks every step;
  glibc's defaults serve blocks that size with fresh mmaps or trim them off the heap, so
  every step pays page faults on memory it has just given back. Keeping blocks under
  32 MB on the heap with no trimming avoids that, at the cost of the process keeping its
  peak heap. Opt out: CIFARLAB_MALLOC=system. glibc only.

Measurements of both: benchmarks/README.md (wait policy, malloc).
"""
from __future__ import annotations

import os

_malloc_tuned: bool | None = None


def wait_policy() -> None:
    """Sleeping OpenMP waits (PASSIVE, with a short spin) unless the environment chose a policy."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", "20000")


def keep_freed_memory() -> bool:
    """Keep freed blocks under 32 MB in the process (glibc's mallopt); True when in effect.
    Applied once per process; CIFARLAB_MALLOC=system leaves glibc's defaults alone."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("CIFARLAB_MALLOC", "").lower() == "system" or not hasattr(os, "confstr"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "mallopt") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""):
            return False
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        _malloc_tuned = bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) and libc.mallopt(M_MMAP_THRESHOLD, 32 << 20))
    except (OSError, ValueError, AttributeError):
        pass
    return _malloc_tuned


def malloc_tuned() -> bool:
    """Whether keep_freed_memory() is in effect in this process."""
    return bool(_malloc_tuned)


def apply() -> bool:
    """Both settings; call before torch is imported for the wait policy to take effect."""
    wait_policy()
    return keep_freed_memory()
