"""The CPU a figure was measured on, read without torch.

Speeds differ up to 2x between CPU generations, so every recorded run and benchmark
names its CPU by name, family and model, and its widest vector unit. This module
imports nothing heavy: a process that must not load torch (the Keras reference) names
its CPU the same way a cifarlab run does.
"""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_fields() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo ({} where there is none)."""
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields.items()}


def cpu_flags(fields: dict[str, str] | None = None) -> set[str]:
    """The CPU's flags: this machine's, or those of the /proc/cpuinfo `fields` given."""
    return set((cpu_fields() if fields is None else fields).get("flags", "").split())


def cpu_name() -> str:
    """"NAME (family F model M, ISA)": ISA is avx512, avx2 or ?, with +bf16 where the CPU
    has AVX-512 BF16 instructions."""
    fields, flags = cpu_fields(), cpu_flags()
    name = fields.get("model name", platform.processor() or platform.machine())
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "?"
    if "avx512_bf16" in flags:
        isa += "+bf16"
    return f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, {isa})"


def cpu_bf16_units(fields: dict[str, str] | None = None) -> bool:
    """Whether the CPU has bf16 instructions at all (AVX-512 BF16 or AMX)."""
    return bool(cpu_flags(fields) & {"avx512_bf16", "amx_bf16"})


def cpu_bf16_faster(fields: dict[str, str] | None = None) -> bool:
    """Whether bf16 trains faster than fp32 on this CPU (`fields`: /proc/cpuinfo's, by default
    this machine's), as measured: AMX tiles, or AMD's AVX-512 BF16. Intel's AVX-512 BF16
    without AMX is not (oneDNN's avx512_core_bf16 kernels trained slower than fp32 there);
    instructions alone do not say it, and elsewhere bf16 is emulated, slower still. The
    measurements, with their CPUs: benchmarks/README.md."""
    fields = cpu_fields() if fields is None else fields
    flags = cpu_flags(fields)
    return "amx_bf16" in flags or ("avx512_bf16" in flags and fields.get("vendor_id") == "AuthenticAMD")


def _cpu_times(stat: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line; None where it cannot be read."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return sum(ticks) - idle, sum(ticks)


def busy_cores(seconds: float = 0.3, stat: Path = Path("/proc/stat")) -> float | None:
    """How many of the machine's cores other work keeps busy now: the busy share of all CPUs over
    `seconds` (this process sleeps meanwhile), times their count. None where /proc/stat is not
    there (not Linux) or says nothing."""
    import os
    import time
    first = _cpu_times(stat)
    time.sleep(seconds)
    second = _cpu_times(stat)
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)
